"""polyfuse-feedback: reward models learned from feedback, and the feedback sources that answer their queries."""
