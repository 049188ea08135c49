"""The live-agent desk: queues, routing by queue and skill, warm handoff of chats and voice calls to
people at the desk, and the fallback (a callback number or a message) when nobody can take a caller.

- `live.py`: what the desk and the callers' legs share (the live handoff, the desk agent, the
  caller's leg, what a leg asks of the desk, typed failure reasons);
- `desk.py`: desk agents' presence, the live handoffs, offers, accept, wrap-up, timeouts, failures
  (audited and counted);
- `bridge.py`: a voice call's side of a handoff (hold audio, the person's audio both ways, the
  spoken fallback);
- `chat.py`: a chat's side of a handoff (messages both ways, the typed fallback);
- `records.py`: desk agents' skills and the callback requests, as stored;
- `shared.py`: what the desks of a cluster's workers share (presence, waiting callers, the offer and
  accept claims, events), the `DeskState` port and its single-worker implementation (Redis:
  `voxgate.cluster.desk`);
- `relay.py`: how two workers' desks meet (a desk agent on another worker, their actions relayed,
  records renewed, workers that are gone dropped).
"""
