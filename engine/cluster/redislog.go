package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"syscall"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// LogRedisTo sends what the Redis client logs to log, at debug level,
// rather than to stderr as plain text, which bypassed log.level and broke
// a stream of JSON lines (once a second while Redis cannot be reached:
// "connection pool: failed to dial after 5 attempts"). Debug is enough:
// the node logs the loss of its link itself, at warn. The Redis client
// has one logger for the whole process, so the daemon calls this once,
// before it joins the cluster.
func LogRedisTo(log *zap.Logger) {
	redis.SetLogger(redisLogger{log})
}

// redisLogger is the Redis client's logging interface over zap.
type redisLogger struct{ log *zap.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	if ce := l.log.Check(zap.DebugLevel, "redis client"); ce != nil {
		ce.Write(zap.String("said", fmt.Sprintf(format, v...)))
	}
}

// linkLog says why the node is not linked to Redis: when the link is
// lost, and when an attempt to link fails, at warn for a reason not
// said since the node was last linked, at debug for one said already,
// since the node tries again at every heartbeat and the reason rarely
// changes (a wrong password stays wrong until someone fixes it). Its
// lines never carry the Redis password: the URL shows it as "xxxxx",
// as check-config does, and so does an error's text, should one ever
// quote it.
type linkLog struct {
	url      string // Options.RedisURL with its password hidden
	password string // the URL's password, hidden wherever it appears

	mu   sync.Mutex
	said string // the kind of failure last logged at warn (failureKind); "" while linked
}

func newLinkLog(rawURL, password string) linkLog {
	u, err := url.Parse(rawURL)
	if err != nil {
		// redis.ParseURL took it, so this is not expected; show nothing
		// of what could hold a password.
		return linkLog{url: "(not a valid URL)", password: password}
	}
	return linkLog{url: u.Redacted(), password: password}
}

// cannotLinkMsg is the one line for a failed attempt to link.
const cannotLinkMsg = "cannot link to Redis; this node answers unavailable until it can"

// lost logs the loss of a link the node had, found during what.
func (l *linkLog) lost(log *zap.Logger, during string, err error) {
	l.saying(err)
	log.Warn("lost the link to Redis", l.fields(during, err)...)
}

// cannotLink logs an attempt to link that failed during what.
func (l *linkLog) cannotLink(log *zap.Logger, during string, err error) {
	level := zap.DebugLevel
	if l.saying(err) {
		level = zap.WarnLevel
	}
	if ce := log.Check(level, cannotLinkMsg); ce != nil {
		ce.Write(l.fields(during, err)...)
	}
}

// linked forgets the reasons said: the next failure is news.
func (l *linkLog) linked() {
	l.mu.Lock()
	l.said = ""
	l.mu.Unlock()
}

// saying records err's kind as the reason last said, and reports
// whether it is another than that.
func (l *linkLog) saying(err error) bool {
	kind := failureKind(err)
	l.mu.Lock()
	defer l.mu.Unlock()
	news := kind != l.said
	l.said = kind
	return news
}

func (l *linkLog) fields(during string, err error) []zap.Field {
	text := err.Error()
	if l.password != "" {
		text = strings.ReplaceAll(text, l.password, "xxxxx")
	}
	return []zap.Field{zap.String("during", during), zap.String("error", text), zap.String("redis", l.url)}
}

// failureKind names the kind of a failure to reach Redis without what
// differs from one attempt to the next (a local port, an address), so
// that the same failure, retried, is the same kind.
func failureKind(err error) string {
	if re, ok := errors.AsType[redis.Error](err); ok {
		// What Redis answered: its first word is a code (WRONGPASS,
		// NOAUTH, NOPERM, LOADING, ...).
		code, _, _ := strings.Cut(re.Error(), " ")
		return code
	}
	if errno, ok := errors.AsType[syscall.Errno](err); ok {
		return errno.Error()
	}
	if ne, ok := errors.AsType[net.Error](err); (ok && ne.Timeout()) || errors.Is(err, context.DeadlineExceeded) {
		return "timeout"
	}
	if errors.Is(err, io.EOF) {
		return "EOF"
	}
	return err.Error()
}
