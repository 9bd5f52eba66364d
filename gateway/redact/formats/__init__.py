"""Where text lives in each kind of outbound message, and how to put it back."""
