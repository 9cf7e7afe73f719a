"""Front ends: log-mel spectrograms on torch.stft and Kaldi filter banks."""
