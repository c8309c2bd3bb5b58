package proto

// SealedLimit is the longest sealed frame's data, in base64url
// characters, for a text limit of maxText bytes: the base64url of an
// envelope 64 bytes longer than the longest text, which fits any
// envelope of a text the server would relay in a message (an envelope
// adds 27 bytes) and nothing much larger. 21,932 for the default 16 KiB.
// The hub refuses longer data, and the configuration a max_frame that
// could not carry it.
func SealedLimit(maxText int) int64 {
	return 4 * ((int64(maxText) + 64 + 2) / 3)
}
