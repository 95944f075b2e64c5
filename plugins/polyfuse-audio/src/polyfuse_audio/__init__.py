"""Audio for polyfuse: waveform observations, log-mel and Hugging Face audio encoders, spoken DigitsVQA."""
