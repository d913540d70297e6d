"""The worlds recrail's environments wrap. Nothing here imports gymnasium or the other packages."""
