"""Values every layer agrees on."""

IGNORE_INDEX = -100
"""Label value of positions that carry no loss (prompt and padding tokens): PyTorch's and Hugging Face's default
``ignore_index`` of cross-entropy."""
