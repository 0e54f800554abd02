package httpapi

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// Document is the API's OpenAPI 3 document, built from the route table
// the router serves and from the descriptors of the messages the handlers
// read and write (in protojson with proto field names), so that it says
// exactly what is served.
func (h *Handler) Document() map[string]any {
	schemas := map[string]any{}
	paths := map[string]map[string]any{}
	errResp := map[string]any{"description": "An error: the gRPC status as HTTP, naming what was wrong.",
		"content": map[string]any{mediaJSON: map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/ErrorBody"}}}}
	for _, rt := range h.routes {
		op := map[string]any{"operationId": rt.op, "summary": rt.summary}
		var params []any
		for _, p := range rt.params {
			s := map[string]any{"type": p.typ}
			if len(p.enum) > 0 {
				s["enum"] = p.enum
			}
			if p.repeated {
				s = map[string]any{"type": "array", "items": s}
			}
			params = append(params, map[string]any{"name": p.name, "in": p.in, "required": p.required, "description": p.desc, "schema": s})
		}
		if params != nil {
			op["parameters"] = params
		}
		if rt.body != nil {
			d := rt.body.ProtoReflect().Descriptor()
			addSchema(schemas, d)
			op["requestBody"] = map[string]any{"required": true, "content": map[string]any{
				mediaJSON: map[string]any{"schema": ref(d)}}}
		}
		ok := map[string]any{"description": "OK"}
		content := map[string]any{}
		if rt.resp != nil && rt.media == nil {
			d := rt.resp.ProtoReflect().Descriptor()
			addSchema(schemas, d)
			content[mediaJSON] = map[string]any{"schema": ref(d)}
		}
		for _, m := range rt.media {
			var s map[string]any
			switch {
			case rt.resp != nil:
				d := rt.resp.ProtoReflect().Descriptor()
				addSchema(schemas, d)
				s = map[string]any{"type": "string", "description": "A stream of " + string(d.Name()) + " objects (#/components/schemas/" + schemaName(d) + ")."}
			case m == mediaArrow:
				s = map[string]any{"type": "string", "format": "binary"}
			case m == mediaCSV:
				s = map[string]any{"type": "string"}
			default:
				s = map[string]any{"type": "object"}
			}
			content[m] = map[string]any{"schema": s}
		}
		ok["content"] = content
		responses := map[string]any{"200": ok}
		if !rt.public {
			op["security"] = []any{map[string]any{"mutualTLS": []string{}}, map[string]any{"bearer": []string{}}}
			for _, code := range []string{"400", "401", "403", "404", "429", "500"} {
				responses[code] = map[string]any{"$ref": "#/components/responses/Error"}
			}
			if rt.body != nil {
				responses["413"] = map[string]any{"$ref": "#/components/responses/Error"}
				responses["415"] = map[string]any{"$ref": "#/components/responses/Error"}
			}
		} else {
			op["security"] = []any{}
		}
		op["responses"] = responses
		if paths[rt.path] == nil {
			paths[rt.path] = map[string]any{}
		}
		paths[rt.path][strings.ToLower(rt.method)] = op
	}
	schemas["ErrorBody"] = map[string]any{"type": "object", "required": []string{"error"}, "properties": map[string]any{
		"error": map[string]any{"type": "object", "required": []string{"code", "status", "message"}, "properties": map[string]any{
			"code":    map[string]any{"type": "integer", "description": "The HTTP status."},
			"status":  map[string]any{"type": "string", "description": "The gRPC status code's name, e.g. INVALID_ARGUMENT."},
			"message": map[string]any{"type": "string"},
			"violations": map[string]any{"type": "array", "items": map[string]any{"type": "object", "required": []string{"description"},
				"properties": map[string]any{"field": map[string]any{"type": "string"}, "description": map[string]any{"type": "string"}}}},
		}}}}
	return map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{"title": "Haven commissioner API", "version": "v1",
			"description": "The commissioner API of the Haven coordinator over HTTP and JSON: the same service, authentication and limits as the gRPC haven.v1.Coordinator API. Message bodies are the protobuf messages of proto/haven/v1 in protojson with proto field names (64-bit integers are strings)."},
		"paths": paths,
		"components": map[string]any{
			"schemas":   schemas,
			"responses": map[string]any{"Error": errResp},
			"securitySchemes": map[string]any{
				"mutualTLS": map[string]any{"type": "mutualTLS",
					"description": "A Haven user certificate issued by the network CA, presented in the TLS handshake (curl --cert --key)."},
				"bearer": map[string]any{"type": "http", "scheme": "bearer", "description": "A token whose SHA-256 the coordinator's configuration lists."},
			},
		},
	}
}

func (h *Handler) openAPI(w http.ResponseWriter, r *http.Request) {
	b, err := json.MarshalIndent(h.Document(), "", "  ")
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", mediaJSON)
	w.Write(append(b, '\n'))
}

// schemaName is a message's or enum's name in the document: its full
// name without the package, dots dropped (Run, RunEvent, Timestamp).
func schemaName(d protoreflect.Descriptor) string {
	name := string(d.FullName())
	if pkg := string(d.ParentFile().Package()); pkg != "" {
		name = strings.TrimPrefix(name, pkg+".")
	}
	return strings.ReplaceAll(name, ".", "")
}

func ref(d protoreflect.Descriptor) map[string]any {
	return map[string]any{"$ref": "#/components/schemas/" + schemaName(d)}
}

// addSchema adds the schema of message d, and of every message and enum
// it uses, to schemas, as protojson encodes them.
func addSchema(schemas map[string]any, d protoreflect.MessageDescriptor) {
	name := schemaName(d)
	if _, done := schemas[name]; done {
		return
	}
	switch d.FullName() {
	case "google.protobuf.Timestamp":
		schemas[name] = map[string]any{"type": "string", "format": "date-time"}
		return
	case "google.protobuf.Duration":
		schemas[name] = map[string]any{"type": "string", "description": "Seconds with an s suffix, e.g. 1.5s."}
		return
	}
	props := map[string]any{}
	s := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
	schemas[name] = s // before the fields, for messages that refer to themselves
	fields := d.Fields()
	for i := range fields.Len() {
		f := fields.Get(i)
		var fs map[string]any
		switch {
		case f.IsMap():
			fs = map[string]any{"type": "object", "additionalProperties": fieldSchema(schemas, f.MapValue())}
		case f.IsList():
			fs = map[string]any{"type": "array", "items": fieldSchema(schemas, f)}
		default:
			fs = fieldSchema(schemas, f)
		}
		props[string(f.Name())] = fs
	}
	var oneofs []string
	for i := range d.Oneofs().Len() {
		o := d.Oneofs().Get(i)
		if o.IsSynthetic() {
			continue
		}
		var names []string
		for j := range o.Fields().Len() {
			names = append(names, string(o.Fields().Get(j).Name()))
		}
		oneofs = append(oneofs, string(o.Name())+": at most one of "+strings.Join(names, ", "))
	}
	if len(oneofs) > 0 {
		slices.Sort(oneofs)
		s["description"] = strings.Join(oneofs, "; ")
	}
}

// fieldSchema is the schema of one value of field f, as protojson
// writes it.
func fieldSchema(schemas map[string]any, f protoreflect.FieldDescriptor) map[string]any {
	switch f.Kind() {
	case protoreflect.BoolKind:
		return map[string]any{"type": "boolean"}
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return map[string]any{"type": "integer", "format": "int32"}
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return map[string]any{"type": "integer", "format": "int64", "minimum": 0}
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return map[string]any{"type": "string", "format": "int64"}
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return map[string]any{"type": "string", "format": "uint64"}
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return map[string]any{"type": "number"}
	case protoreflect.StringKind:
		return map[string]any{"type": "string"}
	case protoreflect.BytesKind:
		return map[string]any{"type": "string", "format": "byte"}
	case protoreflect.EnumKind:
		e := f.Enum()
		name := schemaName(e)
		if _, done := schemas[name]; !done {
			var vals []string
			for i := range e.Values().Len() {
				vals = append(vals, string(e.Values().Get(i).Name()))
			}
			schemas[name] = map[string]any{"type": "string", "enum": vals}
		}
		return ref(e)
	case protoreflect.MessageKind, protoreflect.GroupKind:
		addSchema(schemas, f.Message())
		return ref(f.Message())
	}
	return map[string]any{}
}
