"""Files: uploads, downloads, shares and usage, stored through fsspec."""
