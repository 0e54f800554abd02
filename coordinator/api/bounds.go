package api

import (
	"context"
	"fmt"
	"strings"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Bounds on what a commissioner may send. A request past any of them is
// refused with InvalidArgument before anything is stored or audited, so
// one request cannot write more than a few kilobytes anywhere.
const (
	// MaxRequestBytes caps one Coordinator request, encoded. The server's
	// transport limit is larger because Flight uploads share the port.
	MaxRequestBytes = 64 << 10
	// MaxIDBytes caps definition ids.
	MaxIDBytes = 128
	// MaxPurposeBytes caps a stated purpose; it must also be a key of
	// the bundle's data.purposes.
	MaxPurposeBytes = 64
	// MaxParameters caps how many parameters a submission names.
	MaxParameters = 32
	// MaxParameterNameBytes and MaxParameterValueBytes cap each one.
	MaxParameterNameBytes  = 64
	MaxParameterValueBytes = 256
	// MaxReasonBytes caps a cancellation reason.
	MaxReasonBytes = 500

	// quoteBytes is how much of a bad input an error quotes.
	quoteBytes = 32
	// maxProblems is how many problems one error lists.
	maxProblems = 10
)

// quote renders at most a short prefix of s, escaped, for an error
// message, saying how long s was if it was cut.
func quote(s string) string {
	if len(s) <= quoteBytes {
		return fmt.Sprintf("%q", s)
	}
	cut := quoteBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%q… (%d bytes)", s[:cut], len(s))
}

// problems collects what is wrong with a request and lists at most the
// first maxProblems of them.
type problems struct {
	list []string
	more int
}

func (p *problems) addf(format string, args ...any) {
	if len(p.list) == maxProblems {
		p.more++
		return
	}
	p.list = append(p.list, fmt.Sprintf(format, args...))
}

func (p *problems) empty() bool { return len(p.list) == 0 }

// err is an InvalidArgument status listing the problems under heading.
func (p *problems) err(heading string) error {
	msg := heading + ":\n" + strings.Join(p.list, "\n")
	if p.more > 0 {
		msg += fmt.Sprintf("\n… and %d more", p.more)
	}
	return status.Error(codes.InvalidArgument, msg)
}

// checkText checks a short identifier-like field: not longer than max and
// free of control characters, so that it cannot forge a line of output.
func checkText(field, s string, max int) error {
	switch {
	case len(s) > max:
		return fmt.Errorf("%s is %d bytes, over the limit of %d", field, len(s), max)
	case !utf8.ValidString(s):
		return fmt.Errorf("%s %s is not valid UTF-8", field, quote(s))
	case strings.ContainsFunc(s, isControl):
		return fmt.Errorf("%s %s contains a control character", field, quote(s))
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) }

// UnaryLimit refuses a Coordinator request over MaxRequestBytes before its
// handler sees it.
func UnaryLimit() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if m, ok := req.(proto.Message); ok && strings.HasPrefix(info.FullMethod, "/haven.v1.Coordinator/") {
			if n := proto.Size(m); n > MaxRequestBytes {
				return nil, status.Errorf(codes.InvalidArgument, "the request is %d bytes, over the limit of %d; nothing was stored", n, MaxRequestBytes)
			}
		}
		return handler(ctx, req)
	}
}
