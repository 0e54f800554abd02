package havenv1

import (
	"errors"
	"fmt"

	"github.com/apache/arrow/go/v17/arrow/flight"
	"google.golang.org/protobuf/proto"
)

// TaskDescriptorPrefix is the first element of the path of every task upload
// descriptor. It names the protocol, so an upload meant for something else
// is recognised and refused instead of being read as a task id.
const TaskDescriptorPrefix = "haven.v1.task"

// MaxIDLen is the longest task or run id, in bytes.
const MaxIDLen = 128

// maxTicketLen bounds the bytes ParseTableTicket will decode: far above any
// valid ticket, small enough that a hostile one costs nothing to refuse.
const maxTicketLen = 1024

// CheckID reports whether id is a well-formed task or run id, and if not,
// what is wrong with it. An id is 1 to MaxIDLen bytes of ASCII letters,
// digits, '.', '_' and '-', starting with a letter or digit.
//
// Ids end up in file names, log lines and key derivation (the run id salts
// the run's pseudonyms), so the alphabet is small and an id can never be
// ".", "..", or look like a command-line flag.
func CheckID(id string) error {
	if id == "" {
		return errors.New("id is empty")
	}
	if len(id) > MaxIDLen {
		return fmt.Errorf("id is %d bytes long, over the limit of %d", len(id), MaxIDLen)
	}
	for i, r := range id {
		if !isIDChar(r) {
			return fmt.Errorf("id %q has %q at byte %d: want only letters, digits, '.', '_' or '-'", id, r, i)
		}
	}
	if !isAlnum(rune(id[0])) {
		return fmt.Errorf("id %q must start with a letter or digit", id)
	}
	return nil
}

// ValidID reports whether id is a well-formed task or run id (see CheckID).
func ValidID(id string) bool { return CheckID(id) == nil }

func isAlnum(r rune) bool {
	return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9'
}

func isIDChar(r rune) bool { return isAlnum(r) || r == '.' || r == '_' || r == '-' }

// TaskDescriptor returns the Flight descriptor a node puts on the DoPut
// upload of a task's partial result: type PATH, path
// [TaskDescriptorPrefix, taskID]. It does not check taskID; the coordinator
// does, with ParseTaskDescriptor.
func TaskDescriptor(taskID string) *flight.FlightDescriptor {
	return &flight.FlightDescriptor{
		Type: flight.DescriptorPATH,
		Path: []string{TaskDescriptorPrefix, taskID},
	}
}

// ParseTaskDescriptor returns the task id a DoPut descriptor names. It
// refuses anything TaskDescriptor would not have made from a valid id, with
// an error that says what was wrong, so a server can answer InvalidArgument
// with it as it stands.
func ParseTaskDescriptor(d *flight.FlightDescriptor) (taskID string, err error) {
	if d == nil {
		return "", errors.New("task descriptor: missing")
	}
	if d.Type != flight.DescriptorPATH {
		return "", fmt.Errorf("task descriptor: type %s, want PATH", d.Type)
	}
	if len(d.Cmd) != 0 {
		return "", errors.New("task descriptor: PATH descriptor also carries a cmd")
	}
	if len(d.Path) != 2 {
		return "", fmt.Errorf("task descriptor: path has %d elements, want 2: [%q, task id]", len(d.Path), TaskDescriptorPrefix)
	}
	if d.Path[0] != TaskDescriptorPrefix {
		return "", fmt.Errorf("task descriptor: path starts with %s, want %q", quoteShort(d.Path[0]), TaskDescriptorPrefix)
	}
	if err := CheckID(d.Path[1]); err != nil {
		return "", fmt.Errorf("task descriptor: task %w", err)
	}
	return d.Path[1], nil
}

// RunDescriptorPrefix is the first element of the path of a descriptor
// naming a run's released table, as GetFlightInfo and ListFlights use
// them: ["runs", <run id>], a path a person can type (in pyarrow,
// flight.FlightDescriptor.for_path("runs", run_id)).
const RunDescriptorPrefix = "runs"

// RunDescriptor is the Flight descriptor of run runID's released table.
func RunDescriptor(runID string) *flight.FlightDescriptor {
	return &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{RunDescriptorPrefix, runID}}
}

// ParseRunDescriptor returns the run id a descriptor made by RunDescriptor
// names, refusing anything else with an error saying what was wrong.
func ParseRunDescriptor(d *flight.FlightDescriptor) (runID string, err error) {
	if d == nil {
		return "", errors.New("run descriptor: missing")
	}
	if d.Type != flight.DescriptorPATH {
		return "", fmt.Errorf("run descriptor: type %s, want PATH [%q, run id]", d.Type, RunDescriptorPrefix)
	}
	if len(d.Cmd) != 0 {
		return "", errors.New("run descriptor: PATH descriptor also carries a cmd")
	}
	if len(d.Path) != 2 {
		return "", fmt.Errorf("run descriptor: path has %d elements, want 2: [%q, run id]", len(d.Path), RunDescriptorPrefix)
	}
	if d.Path[0] != RunDescriptorPrefix {
		return "", fmt.Errorf("run descriptor: path starts with %s, want %q", quoteShort(d.Path[0]), RunDescriptorPrefix)
	}
	if err := CheckID(d.Path[1]); err != nil {
		return "", fmt.Errorf("run descriptor: run %w", err)
	}
	return d.Path[1], nil
}

// NewTableTicket returns the Flight ticket that fetches the released table
// of run runID with DoGet. Its bytes are a serialised TableTicket.
func NewTableTicket(runID string) (*flight.Ticket, error) {
	if err := CheckID(runID); err != nil {
		return nil, fmt.Errorf("table ticket: run %w", err)
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(&TableTicket{RunId: runID})
	if err != nil {
		return nil, fmt.Errorf("table ticket for run %s: %w", runID, err)
	}
	return &flight.Ticket{Ticket: b}, nil
}

// ParseTableTicket returns the run id a DoGet ticket names. It refuses a
// missing, oversized or undecodable ticket, one with fields TableTicket does
// not have, and one whose run id fails CheckID.
func ParseTableTicket(t *flight.Ticket) (runID string, err error) {
	if t == nil {
		return "", errors.New("table ticket: missing")
	}
	if len(t.Ticket) == 0 {
		return "", errors.New("table ticket: empty")
	}
	if len(t.Ticket) > maxTicketLen {
		return "", fmt.Errorf("table ticket: %d bytes long, over the limit of %d", len(t.Ticket), maxTicketLen)
	}
	var tt TableTicket
	if err := proto.Unmarshal(t.Ticket, &tt); err != nil {
		return "", fmt.Errorf("table ticket: not a haven.v1.TableTicket: %w", err)
	}
	if len(tt.ProtoReflect().GetUnknown()) != 0 {
		return "", errors.New("table ticket: has fields haven.v1.TableTicket does not define")
	}
	if err := CheckID(tt.RunId); err != nil {
		return "", fmt.Errorf("table ticket: run %w", err)
	}
	return tt.RunId, nil
}

// quoteShort quotes s for an error message, cut short so that hostile input
// cannot flood a log.
func quoteShort(s string) string {
	const limit = 40
	if len(s) <= limit {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q… (%d bytes)", s[:limit], len(s))
}
