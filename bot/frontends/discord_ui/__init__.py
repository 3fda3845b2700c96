"""The Discord front-end (discord.py): one module per concern; `frontend` wires them."""
