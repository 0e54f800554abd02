package havenv1

import (
	"strings"
	"testing"
	"unicode"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// files returns every file of the contract. It is a function because the
// generated descriptors are set by init, after package variables.
func files() []protoreflect.FileDescriptor {
	return []protoreflect.FileDescriptor{
		File_haven_v1_common_proto,
		File_haven_v1_nodelink_proto,
		File_haven_v1_coordinator_proto,
		File_haven_v1_flight_proto,
	}
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range fixtures() {
		t.Run(tc.name, func(t *testing.T) {
			b, err := proto.Marshal(tc.msg)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			got := tc.msg.ProtoReflect().New().Interface()
			if err := proto.Unmarshal(b, got); err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if !proto.Equal(got, tc.msg) {
				t.Errorf("round trip changed the message\n got: %s\nwant: %s",
					prototext.Format(got), prototext.Format(tc.msg))
			}
			if len(got.ProtoReflect().GetUnknown()) != 0 {
				t.Errorf("round trip left unknown fields: %x", got.ProtoReflect().GetUnknown())
			}
		})
	}
}

// TestFixturesCoverEveryField makes TestRoundTrip mean "every field of every
// message survives the wire": it fails when a message has no fixture, or a
// field (oneof members included) is set in none of them.
func TestFixturesCoverEveryField(t *testing.T) {
	seenMsg := map[protoreflect.FullName]bool{}
	seenField := map[protoreflect.FullName]bool{}
	for _, tc := range fixtures() {
		m := tc.msg.ProtoReflect()
		seenMsg[m.Descriptor().FullName()] = true
		markPopulated(m, seenField)
	}
	for _, fd := range files() {
		msgs := fd.Messages()
		for i := range msgs.Len() {
			md := msgs.Get(i)
			if !seenMsg[md.FullName()] {
				t.Errorf("%s has no fixture", md.FullName())
			}
			fields := md.Fields()
			for j := range fields.Len() {
				if f := fields.Get(j); !seenField[f.FullName()] {
					t.Errorf("%s is never set in any fixture", f.FullName())
				}
			}
		}
	}
}

// markPopulated records every field set in m and, recursively, in the
// messages it holds.
func markPopulated(m protoreflect.Message, seen map[protoreflect.FullName]bool) {
	m.Range(func(f protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		seen[f.FullName()] = true
		switch {
		case f.IsMap():
			if f.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					markPopulated(mv.Message(), seen)
					return true
				})
			}
		case f.IsList():
			if f.Message() != nil {
				for i := range v.List().Len() {
					markPopulated(v.List().Get(i).Message(), seen)
				}
			}
		case f.Message() != nil:
			markPopulated(v.Message(), seen)
		}
		return true
	})
}

// TestEnums checks the buf lint conventions the contract relies on: zero is
// <ENUM_NAME>_UNSPECIFIED, so an unset field never reads as a real value,
// and every value carries the enum's prefix, so values of different enums
// never clash in the haven.v1 namespace.
func TestEnums(t *testing.T) {
	var enums []protoreflect.EnumDescriptor
	for _, fd := range files() {
		enums = append(enums, allEnums(fd.Enums(), fd.Messages())...)
	}
	if len(enums) == 0 {
		t.Fatal("found no enums; is the descriptor walk broken?")
	}
	for _, ed := range enums {
		prefix := screamingSnake(string(ed.Name())) + "_"
		zero := ed.Values().ByNumber(0)
		if zero == nil {
			t.Errorf("%s has no zero value", ed.FullName())
		} else if want := prefix + "UNSPECIFIED"; string(zero.Name()) != want {
			t.Errorf("%s: zero value is %s, want %s", ed.FullName(), zero.Name(), want)
		}
		values := ed.Values()
		for i := range values.Len() {
			if v := values.Get(i); !strings.HasPrefix(string(v.Name()), prefix) {
				t.Errorf("%s: value %s lacks the prefix %s", ed.FullName(), v.Name(), prefix)
			}
		}
	}
}

func allEnums(enums protoreflect.EnumDescriptors, msgs protoreflect.MessageDescriptors) []protoreflect.EnumDescriptor {
	var out []protoreflect.EnumDescriptor
	for i := range enums.Len() {
		out = append(out, enums.Get(i))
	}
	for i := range msgs.Len() {
		out = append(out, allEnums(msgs.Get(i).Enums(), msgs.Get(i).Messages())...)
	}
	return out
}

// screamingSnake turns an enum's CamelCase name into its value prefix:
// "TaskErrorCode" -> "TASK_ERROR_CODE".
func screamingSnake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if i > 0 && unicode.IsUpper(r) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}

func TestScreamingSnake(t *testing.T) {
	for in, want := range map[string]string{
		"SiteKind":      "SITE_KIND",
		"TaskErrorCode": "TASK_ERROR_CODE",
		"Run":           "RUN",
	} {
		if got := screamingSnake(in); got != want {
			t.Errorf("screamingSnake(%q) = %q, want %q", in, got, want)
		}
	}
}
