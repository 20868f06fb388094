"""The arq worker: its settings register every job function (``settings``)."""
