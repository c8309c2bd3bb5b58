//go:build race

package auth_test

// raceBuild is true under the race detector, which makes bcrypt about
// thirty times slower: timing tests take smaller samples then.
const raceBuild = true
