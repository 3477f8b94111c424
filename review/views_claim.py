"""Placeholder: routes come in the next commit."""

urls: list = []
