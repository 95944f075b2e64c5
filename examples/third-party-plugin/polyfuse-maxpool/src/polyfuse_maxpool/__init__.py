"""An example third-party polyfuse plugin: a max-pooling fuser (see CONTRIBUTING.md)."""
