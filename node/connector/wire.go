package connector

import (
	"fmt"
	"math"

	connectorv1 "github.com/havenhealth/haven/proto/haven/connector/v1"
)

// Conversions between this package's types and the plugin protocol's.
// Both sides use them, so a value means the same on each.

func valueToProto(v Value) (*connectorv1.Value, error) {
	pv := &connectorv1.Value{}
	switch v.kind {
	case KindNull:
		pv.Kind = &connectorv1.Value_NullValue{NullValue: &connectorv1.Null{}}
	case KindString:
		pv.Kind = &connectorv1.Value_StringValue{StringValue: v.s}
	case KindInt64:
		pv.Kind = &connectorv1.Value_Int64Value{Int64Value: v.i}
	case KindFloat64:
		pv.Kind = &connectorv1.Value_Float64Value{Float64Value: v.f}
	case KindBool:
		pv.Kind = &connectorv1.Value_BoolValue{BoolValue: v.i != 0}
	case KindDate:
		if v.i < math.MinInt32 || v.i > math.MaxInt32 {
			return nil, fmt.Errorf("date %d days from 1970-01-01 is out of range", v.i)
		}
		pv.Kind = &connectorv1.Value_DateValue{DateValue: int32(v.i)}
	case KindStringList:
		pv.Kind = &connectorv1.Value_StringListValue{StringListValue: &connectorv1.StringList{Values: v.list}}
	default:
		return nil, fmt.Errorf("unknown kind %v", v.kind)
	}
	return pv, nil
}

func valueFromProto(pv *connectorv1.Value) (Value, error) {
	switch k := pv.GetKind().(type) {
	case *connectorv1.Value_NullValue:
		return Null(), nil
	case *connectorv1.Value_StringValue:
		return String(k.StringValue), nil
	case *connectorv1.Value_Int64Value:
		return Int64(k.Int64Value), nil
	case *connectorv1.Value_Float64Value:
		return Float64(k.Float64Value), nil
	case *connectorv1.Value_BoolValue:
		return Bool(k.BoolValue), nil
	case *connectorv1.Value_DateValue:
		return DateOfDays(k.DateValue), nil
	case *connectorv1.Value_StringListValue:
		return Value{kind: KindStringList, list: k.StringListValue.GetValues()}, nil
	}
	return Value{}, fmt.Errorf("no value set")
}

func queryToProto(q Query) (*connectorv1.QueryRequest, error) {
	req := &connectorv1.QueryRequest{Sql: q.SQL, MaxRows: q.MaxRows, MaxBytes: q.MaxBytes}
	for i, a := range q.Args {
		pv, err := valueToProto(a)
		if err != nil {
			return nil, fmt.Errorf("argument $%d: %w", i+1, err)
		}
		req.Args = append(req.Args, pv)
	}
	return req, nil
}

func queryFromProto(req *connectorv1.QueryRequest) (Query, error) {
	if req.GetSql() == "" {
		return Query{}, fmt.Errorf("no SQL")
	}
	if req.GetMaxRows() <= 0 || req.GetMaxBytes() <= 0 {
		return Query{}, fmt.Errorf("limits must be positive: max_rows %d, max_bytes %d", req.GetMaxRows(), req.GetMaxBytes())
	}
	q := Query{SQL: req.GetSql(), MaxRows: req.GetMaxRows(), MaxBytes: req.GetMaxBytes()}
	for i, pv := range req.GetArgs() {
		v, err := valueFromProto(pv)
		if err != nil {
			return Query{}, fmt.Errorf("argument $%d: %w", i+1, err)
		}
		q.Args = append(q.Args, v)
	}
	return q, nil
}

func descriptionToProto(d Description) *connectorv1.DescribeResponse {
	resp := &connectorv1.DescribeResponse{
		Dialect:       string(d.Dialect),
		PluginVersion: d.PluginVersion,
		CdmVersion:    int32(d.CDMVersion),
	}
	for _, t := range d.Tables {
		resp.Tables = append(resp.Tables, &connectorv1.TableInfo{Name: t.Name, Rows: t.Rows})
	}
	return resp
}

func descriptionFromProto(resp *connectorv1.DescribeResponse) Description {
	d := Description{
		Dialect:       Dialect(resp.GetDialect()),
		PluginVersion: resp.GetPluginVersion(),
		CDMVersion:    int(resp.GetCdmVersion()),
	}
	for _, t := range resp.GetTables() {
		d.Tables = append(d.Tables, TableInfo{Name: t.GetName(), Rows: t.GetRows()})
	}
	return d
}
