//go:build race

package outbox_test

// raceBuild is true under the race detector, whose sync.Pool drops a
// quarter of what is put back at random: a test of what the pools save
// counts those allocations then, which a real build never makes.
const raceBuild = true
