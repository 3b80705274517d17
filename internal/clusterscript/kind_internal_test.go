package clusterscript

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"syscall"
	"testing"

	"github.com/redis/go-redis/v9"
)

// reply makes an error reply as go-redis's reader does (the unexported
// proto.RedisError, the type of redis.ErrNoScript), so the tests below need no server.
func reply(msg string) error {
	v := reflect.New(reflect.TypeOf(redis.ErrNoScript)).Elem()
	v.SetString(msg)
	return v.Interface().(error)
}

// Every error a send can meet, and what the loop does with it. The cases that matter
// most: nothing that may have run is ever sorted as something to send again.
func TestKindSortsEveryErrorTheLoopCanMeet(t *testing.T) {
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}}
	read := &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
	for _, tc := range []struct {
		err  error
		want errKind
	}{
		{nil, ok},
		{reply("MOVED 3999 127.0.0.1:6381"), moved},
		{reply("ASK 3999 127.0.0.1:6381"), ask},
		{redis.ErrNoScript, notLoaded},
		{reply("ERR Function not found"), notLoaded},
		{reply("TRYAGAIN Multiple keys request during rehashing of slot"), refused},
		{reply("CLUSTERDOWN The cluster is down"), refused},
		{reply("LOADING Redis is loading the dataset in memory"), refused},
		{reply("MASTERDOWN Link with MASTER is down"), refused},
		{reply("READONLY You can't write against a read only replica."), refused},
		{reply("NOREPLICAS Not enough good replicas to write."), refused},
		{reply("BUSY Redis is busy running a script."), refused},
		{reply("ERR max number of clients reached"), refused},
		{reply("OOM command not allowed when used memory > 'maxmemory'."), refusedFinal},
		{reply("NOPERM this user has no permissions"), refusedFinal},
		{reply("MISCONF Redis is configured to save RDB snapshots"), refusedFinal},
		{reply("CROSSSLOT Keys in request don't hash to the same slot"), refusedFinal},
		{dial, notSent},
		{fmt.Errorf("wrapped: %w", dial), notSent},
		{redis.ErrPoolTimeout, notSent},
		{redis.ErrClosed, notSent},
		{read, lost},
		{io.EOF, lost},
		{io.ErrUnexpectedEOF, lost},
		{&net.OpError{Op: "write", Net: "tcp", Err: syscall.EPIPE}, lost},
		{context.DeadlineExceeded, lost},
		{context.Canceled, lost},
		// A script's own errors, and errors of commands it called, whatever their first
		// word: it ran.
		{reply("BOOM halfway"), ranWithError},
		{reply("BUSYGROUP Consumer Group name already exists"), ranWithError},
		{reply("WRONGTYPE Operation against a key holding the wrong kind of value script: e01ef13321ccc776597083fb3f0a45ff668cdeba, on @user_script:1."), ranWithError},
		{reply("OOM command not allowed when used memory > 'maxmemory'. script: dd2d8d9339f045e13dbd5f12c60031f75143d0d5, on @user_script:1."), ranWithError},
		{reply("ERR Unknown Redis command called from script script: f, on @user_function:2."), ranWithError},
	} {
		if got := kind(tc.err); got != tc.want {
			t.Errorf("kind(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}
