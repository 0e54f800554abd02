package httpapi

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"regexp"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// httpStatus maps a gRPC status code to the HTTP status the API answers,
// as google.rpc.Code documents the pairs (and grpc-gateway maps them).
func httpStatus(c codes.Code) int {
	switch c {
	case codes.OK:
		return http.StatusOK
	case codes.Canceled:
		return 499 // client closed request
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists, codes.Aborted:
		return http.StatusConflict
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Unimplemented:
		return http.StatusNotImplemented
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// Violation is one thing wrong with a request: the field (a JSON body
// field, a query or path parameter, or parameters.<name>) where it can be
// told, and what is wrong.
type Violation struct {
	Field       string `json:"field,omitempty"`
	Description string `json:"description"`
}

// Error is the body of every error answer: {"error": Error}.
type Error struct {
	// Code is the HTTP status; Status the gRPC code's name
	// (INVALID_ARGUMENT, NOT_FOUND, ...).
	Code    int    `json:"code"`
	Status  string `json:"status"`
	Message string `json:"message"`
	// Violations list each problem of a request the API refused as
	// invalid.
	Violations []Violation `json:"violations,omitempty"`
}

// statusName is a gRPC code as google.rpc.Code spells it.
func statusName(c codes.Code) string {
	var b strings.Builder
	for i, r := range c.String() {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

// fieldOf finds the field a line of the API's error message is about: the
// API starts each problem with the field's name ("purpose is required",
// "parameters.min_age: ...", "run_id: ...").
var fieldOf = regexp.MustCompile(`^([a-z][a-z0-9_]*(?:\.[A-Za-z0-9_-]+)?)(?::| is | has | contains )`)

// unknownParameter finds the parameter a definition does not declare in
// the catalogue's binding error.
var unknownParameter = regexp.MustCompile(`unknown parameter "([^"]+)"`)

// violations reads the problems out of an InvalidArgument message: the
// API lists them one a line under a heading, or says one thing on one
// line.
func violations(msg string) []Violation {
	lines := strings.Split(msg, "\n")
	// Under "parameters of <definition>:" the catalogue names each
	// parameter bare; the request's field is parameters.<name>.
	params := false
	if len(lines) > 1 {
		params = strings.HasPrefix(lines[0], "parameters of ")
		lines = lines[1:]
	}
	var out []Violation
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		v := Violation{Description: l}
		if m := unknownParameter.FindStringSubmatch(l); m != nil {
			v.Field = "parameters." + m[1]
		} else if m := fieldOf.FindStringSubmatch(l); m != nil {
			v.Field = m[1]
			if params && !strings.HasPrefix(v.Field, "parameters.") {
				v.Field = "parameters." + v.Field
			}
		}
		out = append(out, v)
	}
	return out
}

// fail answers err, a gRPC status (or an unexpected error, which is
// logged and not shown), as HTTP.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	st, ok := status.FromError(err)
	if !ok {
		h.cfg.Log.LogAttrs(r.Context(), slog.LevelError, "httpapi: "+r.Method+" "+r.URL.Path, slog.String("error", err.Error()))
		st = status.New(codes.Internal, "the request failed; the coordinator's log has the detail")
	}
	var vs []Violation
	if st.Code() == codes.InvalidArgument {
		vs = violations(st.Message())
	}
	writeError(w, httpStatus(st.Code()), statusName(st.Code()), st.Message(), vs)
}

// invalid answers 400 with the violations of a request the HTTP layer
// itself could not read (its JSON, its query parameters).
func invalid(w http.ResponseWriter, msg string, vs ...Violation) {
	writeError(w, http.StatusBadRequest, statusName(codes.InvalidArgument), msg, vs)
}

func writeError(w http.ResponseWriter, code int, name, msg string, vs []Violation) {
	b, _ := json.Marshal(map[string]Error{"error": {Code: code, Status: name, Message: msg, Violations: vs}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}
