// spdyclient is a test-only exec client built from client-go's own remotecommand and
// SPDY upgrader, so vnode's SPDY/3.1 server is checked against the real Go peer.
//
// It also speaks WebSocket (-websocket), with client-go's WebSocket executor.
//
// Usage: spdyclient -url https://127.0.0.1:PORT/exec/ns/pod/ctr?command=...&output=1 [flags]
// stdin/stdout/stderr are the process's own. Exit status: the remote command's exit code,
// 125 for any other error (printed as "spdyclient: <error>" on stderr).
//
// spdyclient -dump-syn-streams prints, one per line in hex, two SYN_STREAM frames written
// by spdystream's framer on one connection (persistent zlib context), as a test vector.
package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/moby/spdystream/spdy"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	spdytransport "k8s.io/client-go/transport/spdy"
	utilexec "k8s.io/client-go/util/exec"
)

type oneSize struct {
	sent bool
	size remotecommand.TerminalSize
	done chan struct{}
}

func (s *oneSize) Next() *remotecommand.TerminalSize {
	if !s.sent {
		s.sent = true
		return &s.size
	}
	<-s.done
	return nil
}

func main() {
	target := flag.String("url", "", "full exec URL including the query")
	caFile := flag.String("ca", "", "CA bundle to verify the server (default: skip verification)")
	certFile := flag.String("cert", "", "client certificate")
	keyFile := flag.String("key", "", "client key")
	token := flag.String("token", "", "bearer token")
	protocols := flag.String("protocols", "v5.channel.k8s.io,v4.channel.k8s.io,v3.channel.k8s.io,v2.channel.k8s.io,channel.k8s.io", "offered X-Stream-Protocol-Version values, in order")
	stdin := flag.Bool("stdin", false, "send our stdin")
	tty := flag.Bool("tty", false, "request a tty")
	cols := flag.Uint("cols", 0, "with -tty: send one resize with this width")
	rows := flag.Uint("rows", 0, "with -tty: send one resize with this height")
	websocket := flag.Bool("websocket", false, "use client-go's WebSocket executor (GET, channel protocol) instead of SPDY")
	dump := flag.Bool("dump-syn-streams", false, "print two spdystream SYN_STREAM frames in hex and exit")
	flag.Parse()

	if *dump {
		if err := dumpSynStreams(); err != nil {
			fail(err)
		}
		return
	}
	u, err := url.Parse(*target)
	if err != nil {
		fail(err)
	}
	config := &rest.Config{
		Host:        u.Scheme + "://" + u.Host,
		BearerToken: *token,
		TLSClientConfig: rest.TLSClientConfig{
			Insecure: *caFile == "",
			CAFile:   *caFile,
			CertFile: *certFile,
			KeyFile:  *keyFile,
		},
	}
	var executor remotecommand.Executor
	if *websocket {
		executor, err = remotecommand.NewWebSocketExecutorForProtocols(config, http.MethodGet, u.String(), strings.Split(*protocols, ",")...)
	} else {
		transport, upgrader, rtErr := spdytransport.RoundTripperFor(config)
		if rtErr != nil {
			fail(rtErr)
		}
		executor, err = remotecommand.NewSPDYExecutorForProtocols(transport, upgrader, http.MethodPost, u, strings.Split(*protocols, ",")...)
	}
	if err != nil {
		fail(err)
	}
	options := remotecommand.StreamOptions{Stdout: os.Stdout, Stderr: os.Stderr, Tty: *tty}
	if *stdin {
		options.Stdin = os.Stdin
	}
	if *tty && *cols > 0 {
		queue := &oneSize{size: remotecommand.TerminalSize{Width: uint16(*cols), Height: uint16(*rows)}, done: make(chan struct{})}
		defer close(queue.done)
		options.TerminalSizeQueue = queue
	}
	err = executor.StreamWithContext(context.Background(), options)
	var exitErr utilexec.ExitError
	if errors.As(err, &exitErr) {
		fmt.Fprintf(os.Stderr, "spdyclient: %v\n", err)
		os.Exit(exitErr.ExitStatus())
	}
	if err != nil {
		fail(err)
	}
}

func dumpSynStreams() error {
	var buf bytes.Buffer
	framer, err := spdy.NewFramer(&buf, &buf)
	if err != nil {
		return err
	}
	for i, kind := range []string{"error", "stdout"} {
		frame := &spdy.SynStreamFrame{
			StreamId: spdy.StreamId(2*i + 1),
			Headers:  http.Header{"Streamtype": {kind}, "X-Many": {"a", "b"}},
		}
		if err := framer.WriteFrame(frame); err != nil {
			return err
		}
		fmt.Println(hex.EncodeToString(buf.Bytes()))
		buf.Reset()
	}
	return nil
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "spdyclient: %v\n", err)
	os.Exit(125)
}
