"""Edges that carry a conversation in: the voice sockets and the text chat of the command line.

- `serve.py`: one loop (`serve_call`) for a call on any voice socket, in a `dialect.Dialect`:
  `native.py` (voxgate's own protocol) or `twilio.py` (Twilio Media Streams, messages in
  `twilio_messages.py`);
- `services.py`: `CallServices`, what a channel needs from the application serving it (the port
  `api.state.AppState` satisfies); `calls.py`: opening a socket for a call, its output, the
  bookkeeping at its end; `admission.py`: lines and sockets not started yet; `audio.py`: the
  call's audio between the socket's format and the pipeline's; `wire.py`: JSON frames, close
  reasons, protocol errors; `throttle.py`: new conversations per address and calling number;
- `text.py`: the text channel of `voxgate chat`.
"""
