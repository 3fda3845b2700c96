"""The Telegram front-end (python-telegram-bot): one module per concern; `frontend` wires them."""
