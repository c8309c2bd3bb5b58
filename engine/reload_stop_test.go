package engine_test

import (
	"context"
	"testing"
	"time"

	"duet/config"
	"duet/engine/enginetest"
)

// TestReloadDuringShutdown: resume settings reloaded while the server
// shuts down leave its listeners alone once gnet is closing them (run
// with -race, the reload's look at a listener raced the close, and
// could have set an option on a descriptor reused by then).
func TestReloadDuringShutdown(t *testing.T) {
	for range 3 {
		d := enginetest.Start(t, nil)
		stop, done := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				default:
				}
				d.SetResume(config.Defaults().Resume)
			}
		}()
		time.Sleep(20 * time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := d.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		close(stop)
		<-done
	}
}
