package cluster

import (
	"context"
	"fmt"

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
