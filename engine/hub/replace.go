package hub

import "duet/proto"

// LoginReplacing is Login for an account that may already be online
// (accounts mode with takeover on). If a session of that name exists, it
// is logged out first: its partner is told proto.ReasonReplaced, its name
// and token are freed, and its Queue is detached (Queue.Detach) so that
// its connection tells its user why and closes; its Outbox is returned.
// The new session takes the name in the same step, so no third login can
// slip in between.
//
// The caller must have checked that the user owns the name (a password);
// the hub only keeps names unique.
func (h *Hub) LoginReplacing(name []byte, out Outbox) (s *Session, replaced Outbox, err *proto.Error) {
	if !proto.ValidName(name) {
		return nil, nil, proto.ErrBadName
	}
	s = h.newSession(name, out)
	if old := h.takeOver(s); old != nil {
		old.q.Detach(proto.ReasonReplaced)
		replaced = old.out
	}
	return s, replaced, nil
}

// takeOver enters and welcomes s, logging out the session that held the
// name, if any, which it returns.
func (h *Hub) takeOver(s *Session) (old *Session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if old = h.names[s.key]; old != nil {
		h.closeLocked(old, proto.ReasonReplaced, 0)
	}
	h.enterLocked(s)
	s.out.Deliver(&proto.Event{Kind: proto.EvWelcome, Name: s.name, Token: s.token})
	return old
}
