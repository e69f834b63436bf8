"""The comparison tab: two models side by side on one request."""
