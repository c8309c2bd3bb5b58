package hub

import "duet/proto"

// LoginReplacing is Login for an account that may already be online
// (accounts mode with takeover on). If a session of that name exists, it
// is logged out first: its partner is told proto.ReasonReplaced, its name
// and token are freed, and its Outbox is returned so the caller can tell
// that connection why and close it. The new session takes the name in
// the same step, so no third login can slip in between.
//
// The caller must have checked that the user owns the name (a password);
// the hub only keeps names unique.
func (h *Hub) LoginReplacing(name []byte, out Outbox) (s *Session, replaced Outbox, err *proto.Error) {
	if !proto.ValidName(name) {
		return nil, nil, proto.ErrBadName
	}
	s = h.newSession(name, out)
	h.mu.Lock()
	defer h.mu.Unlock()
	if old, online := h.names[s.key]; online {
		h.closeLocked(old, proto.ReasonReplaced, 0)
		replaced = old.out
	}
	h.enterLocked(s)
	out.Deliver(&proto.Event{Kind: proto.EvWelcome, Name: s.name, Token: s.token})
	return s, replaced, nil
}
