package engine

import (
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Debug lines for a connection's life. Each carries the connection's id
// and client address (conn.logger); none carries message text, and a
// token appears only as its first six characters (proto.Token.Short).
// They are checked before they are built, so at info level they cost a
// level test and nothing else.

func (cn *conn) debugEnabled() bool { return cn.loop.srv.log.Core().Enabled(zapcore.DebugLevel) }

func (cn *conn) logOpened() {
	if cn.debugEnabled() {
		cn.logger().Debug("connection opened", zap.String("protocol", cn.protocol()), zap.Bool("via_proxy", cn.addr.fromProxy))
	}
}

func (cn *conn) logClosed() {
	if cn.debugEnabled() {
		f := []zap.Field{zap.String("protocol", cn.protocol()), zap.String("reason", endings[cn.closing].label)}
		if cn.sess != nil {
			f = append(f, zap.String("user", cn.sess.Name()))
		}
		cn.logger().Debug("connection closed", f...)
	}
}

func (cn *conn) logLogin() {
	if cn.debugEnabled() && cn.sess != nil {
		cn.logger().Debug("logged in", zap.String("user", cn.sess.Name()), zap.String("token", cn.sess.Token().Short()))
	}
}
