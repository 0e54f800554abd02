package runner

import (
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestRetryable(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{status.Error(codes.Unavailable, "connection refused"), true},
		{status.Error(codes.Aborted, "an upload for task t is already under way; try again when it ends"), true},
		{status.Error(codes.AlreadyExists, "the upload for task t was already received"), false},
		{status.Error(codes.InvalidArgument, "row 3: bad pseudonym"), false},
		{status.Error(codes.FailedPrecondition, "run r takes no more uploads"), false},
		{errors.New("not a status"), false},
	} {
		if got := retryable(tc.err); got != tc.want {
			t.Errorf("retryable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
