"""The Realtime API: ``/v1/realtime`` WebSocket sessions relayed to a provider's Realtime
socket, metered per ``response.done``, limited per key; ephemeral client secrets. The hosts
own the sockets (``hosts/local/realtime.py``, ``hosts/edge/realtime.py``); this package owns
everything else. See docs/realtime.md."""
