package havenv1

import (
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow/flight"
	"google.golang.org/protobuf/proto"
)

func TestCheckID(t *testing.T) {
	for _, tc := range []struct {
		id      string
		wantErr string // empty: valid
	}{
		{id: "run-2025-0001"},
		{id: "task_42.a"},
		{id: "01J9ZQ3V5K8XGQ0M7T2W4B6D8F"},
		{id: "7"},
		{id: strings.Repeat("a", MaxIDLen)},
		{id: "", wantErr: "id is empty"},
		{id: strings.Repeat("a", MaxIDLen+1), wantErr: "129 bytes long, over the limit of 128"},
		{id: "run 1", wantErr: `has ' ' at byte 3`},
		{id: "run/1", wantErr: `has '/' at byte 3`},
		{id: "ré", wantErr: `has 'é' at byte 1`},
		{id: "run\x00", wantErr: `has '\x00' at byte 3`},
		{id: "\xff", wantErr: `has '�' at byte 0`},
		{id: ".", wantErr: "must start with a letter or digit"},
		{id: "..", wantErr: "must start with a letter or digit"},
		{id: "-rf", wantErr: "must start with a letter or digit"},
		{id: "_x", wantErr: "must start with a letter or digit"},
	} {
		err := CheckID(tc.id)
		if got := ValidID(tc.id); got != (err == nil) {
			t.Errorf("ValidID(%q) = %v, but CheckID says %v", tc.id, got, err)
		}
		if tc.wantErr == "" {
			if err != nil {
				t.Errorf("CheckID(%q): %v, want no error", tc.id, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("CheckID(%q) = %v, want an error containing %q", tc.id, err, tc.wantErr)
		}
	}
}

func TestParseTaskDescriptor(t *testing.T) {
	for _, tc := range []struct {
		name    string
		desc    *flight.FlightDescriptor
		want    string
		wantErr string
	}{
		{name: "made by TaskDescriptor", desc: TaskDescriptor("task-42"), want: "task-42"},
		{name: "longest id", desc: TaskDescriptor(strings.Repeat("t", MaxIDLen)), want: strings.Repeat("t", MaxIDLen)},
		{name: "nil", desc: nil, wantErr: "task descriptor: missing"},
		{name: "CMD type", desc: &flight.FlightDescriptor{Type: flight.DescriptorCMD, Cmd: []byte("task-42")},
			wantErr: "type CMD, want PATH"},
		{name: "unset type", desc: &flight.FlightDescriptor{Path: []string{TaskDescriptorPrefix, "task-42"}},
			wantErr: "type UNKNOWN, want PATH"},
		{name: "PATH with cmd", desc: &flight.FlightDescriptor{Type: flight.DescriptorPATH,
			Path: []string{TaskDescriptorPrefix, "task-42"}, Cmd: []byte("x")}, wantErr: "also carries a cmd"},
		{name: "no path", desc: &flight.FlightDescriptor{Type: flight.DescriptorPATH}, wantErr: "path has 0 elements, want 2"},
		{name: "id only", desc: &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{"task-42"}},
			wantErr: "path has 1 elements, want 2"},
		{name: "extra element", desc: &flight.FlightDescriptor{Type: flight.DescriptorPATH,
			Path: []string{TaskDescriptorPrefix, "task-42", "x"}}, wantErr: "path has 3 elements, want 2"},
		{name: "other prefix", desc: &flight.FlightDescriptor{Type: flight.DescriptorPATH,
			Path: []string{"haven.v2.task", "task-42"}}, wantErr: `path starts with "haven.v2.task", want "haven.v1.task"`},
		{name: "long prefix cut short", desc: &flight.FlightDescriptor{Type: flight.DescriptorPATH,
			Path: []string{strings.Repeat("p", 5000), "task-42"}}, wantErr: "… (5000 bytes)"},
		{name: "empty id", desc: TaskDescriptor(""), wantErr: "task descriptor: task id is empty"},
		{name: "long id", desc: TaskDescriptor(strings.Repeat("t", MaxIDLen+1)), wantErr: "task id is 129 bytes long"},
		{name: "path traversal", desc: TaskDescriptor("../etc"), wantErr: `task id "../etc" has '/' at byte 2`},
		{name: "dot dot", desc: TaskDescriptor(".."), wantErr: "must start with a letter or digit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseTaskDescriptor(tc.desc)
			checkParse(t, got, err, tc.want, tc.wantErr)
		})
	}
}

func TestParseRunDescriptor(t *testing.T) {
	for _, tc := range []struct {
		name    string
		desc    *flight.FlightDescriptor
		want    string
		wantErr string
	}{
		{name: "made by RunDescriptor", desc: RunDescriptor("run-42"), want: "run-42"},
		{name: "typed by a person", desc: &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{"runs", "run-42"}}, want: "run-42"},
		{name: "nil", desc: nil, wantErr: "run descriptor: missing"},
		{name: "CMD type", desc: &flight.FlightDescriptor{Type: flight.DescriptorCMD, Cmd: []byte("run-42")}, wantErr: "type CMD, want PATH"},
		{name: "PATH with cmd", desc: &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{"runs", "run-42"}, Cmd: []byte("x")},
			wantErr: "also carries a cmd"},
		{name: "id only", desc: &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{"run-42"}}, wantErr: "path has 1 elements, want 2"},
		{name: "a task's", desc: TaskDescriptor("run-42"), wantErr: `path starts with "haven.v1.task", want "runs"`},
		{name: "path traversal", desc: RunDescriptor("../etc"), wantErr: `run id "../etc" has '/' at byte 2`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRunDescriptor(tc.desc)
			checkParse(t, got, err, tc.want, tc.wantErr)
		})
	}
}

func TestTableTicket(t *testing.T) {
	good, err := NewTableTicket("run-2025-0001")
	if err != nil {
		t.Fatalf("NewTableTicket: %v", err)
	}
	mustMarshal := func(m proto.Message) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		return b
	}
	for _, tc := range []struct {
		name    string
		ticket  *flight.Ticket
		want    string
		wantErr string
	}{
		{name: "made by NewTableTicket", ticket: good, want: "run-2025-0001"},
		{name: "nil", ticket: nil, wantErr: "table ticket: missing"},
		{name: "no bytes", ticket: &flight.Ticket{}, wantErr: "table ticket: empty"},
		{name: "oversized", ticket: &flight.Ticket{Ticket: make([]byte, maxTicketLen+1)}, wantErr: "over the limit of 1024"},
		{name: "not protobuf", ticket: &flight.Ticket{Ticket: []byte("run-2025-0001")}, wantErr: "not a haven.v1.TableTicket"},
		{name: "unknown field", ticket: &flight.Ticket{Ticket: mustMarshal(&UploadReceipt{TaskId: "run-1", Rows: 5})},
			wantErr: "has fields haven.v1.TableTicket does not define"},
		{name: "empty run id", ticket: &flight.Ticket{Ticket: mustMarshal(&TableTicket{RunId: ""})}, wantErr: "table ticket: empty"},
		{name: "bad run id", ticket: &flight.Ticket{Ticket: mustMarshal(&TableTicket{RunId: "run;drop"})},
			wantErr: `table ticket: run id "run;drop" has ';' at byte 3`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseTableTicket(tc.ticket)
			checkParse(t, got, err, tc.want, tc.wantErr)
		})
	}
}

func TestNewTableTicketRefusesBadID(t *testing.T) {
	for _, id := range []string{"", "a b", strings.Repeat("r", MaxIDLen+1)} {
		if ticket, err := NewTableTicket(id); err == nil || !strings.HasPrefix(err.Error(), "table ticket: run id") {
			t.Errorf("NewTableTicket(%q) = %v, %v; want a table ticket: run id error", id, ticket, err)
		}
	}
}

func checkParse(t *testing.T, got string, err error, want, wantErr string) {
	t.Helper()
	if wantErr == "" {
		if err != nil || got != want {
			t.Errorf("got %q, %v; want %q, no error", got, err, want)
		}
		return
	}
	if err == nil || !strings.Contains(err.Error(), wantErr) {
		t.Errorf("got %q, %v; want an error containing %q", got, err, wantErr)
	}
	if got != "" {
		t.Errorf("got id %q alongside the error; want none", got)
	}
}
