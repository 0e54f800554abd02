// Command plugin-double is a test double of a connector plugin, built by
// node/connector's tests. It behaves well or badly on request, so that the
// tests can check that the node survives every way a plugin can fail.
//
// Flags pick how Describe behaves and whether the double serves through
// connector.Serve (-raw=false: misbehaviour inside the Arrow bytes) or
// through its own protocol server (-raw: misbehaviour in the protocol
// itself, which connector.Serve would never allow). The SQL text of a
// query is a command; see query and rawQuery.
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/ipc"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/node/connector"
	connectorv1 "github.com/havenhealth/haven/proto/haven/connector/v1"
)

func main() {
	describe := flag.String("describe", "ok", "how Describe behaves: ok, crash, hang, bad")
	raw := flag.Bool("raw", false, "serve the protocol directly, misbehaving in it")
	touch := flag.String("touch", "", "create this file on start, to show the double ran")
	exitAtStart := flag.Bool("exit-at-start", false, "exit before the handshake")
	dataVersion := flag.String("data-version", "", "report the contents of this file as the data version")
	flag.Parse()
	if *touch != "" {
		if err := os.WriteFile(*touch, nil, 0o600); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	if *exitAtStart {
		fmt.Fprintln(os.Stderr, "plugin-double: exiting before the handshake, as asked")
		os.Exit(4)
	}
	logger := connector.NewPluginLogger(os.Stderr)
	logger.Info("plugin-double starting", "describe", *describe, "raw", *raw)
	d := &double{describe: *describe, logger: logger, dataVersion: *dataVersion}
	if *raw {
		plugin.Serve(&plugin.ServeConfig{
			HandshakeConfig: connector.HandshakeConfig(),
			VersionedPlugins: map[int]plugin.PluginSet{
				connector.ProtocolVersion: {"connector": &rawPlugin{d: d}},
			},
			GRPCServer: plugin.DefaultGRPCServer,
		})
		return
	}
	connector.Serve(d, logger)
}

type double struct {
	describe    string
	logger      *slog.Logger
	dataVersion string // a file holding the data version, or ""
}

// DataVersion reports the contents of the -data-version file.
func (d *double) DataVersion() (string, error) {
	if d.dataVersion == "" {
		return "", nil
	}
	b, err := os.ReadFile(d.dataVersion)
	return string(b), err
}

func (d *double) Describe(ctx context.Context) (connector.Description, error) {
	desc := connector.Description{
		Dialect:       connector.DialectDuckDB,
		PluginVersion: "double",
		CDMVersion:    cdm.Version,
		Tables:        []connector.TableInfo{{Name: cdm.TablePatient, Rows: 42}},
	}
	switch d.describe {
	case "crash":
		os.Exit(3)
	case "hang":
		time.Sleep(time.Hour) // ignores ctx, as a stuck plugin would
	case "bad":
		desc.Tables = append(desc.Tables, connector.TableInfo{Name: "not_a_cdm_table", Rows: 1})
	}
	return desc, nil
}

// query runs one of these commands, given as the SQL text:
//
//	echo                   one row, one column per argument, holding it
//	rows N batch B [pad P] N rows (n int64, s utf8 of P+ bytes) in batches of B
//	slow                   a batch every 20ms until cancelled
//	crash-after K          K batches of 1000 rows, then the process exits
//	hang                   never answers, ignoring cancellation
//	error                  fails with a plain error
//	garbage                bytes that are not Arrow
//	truncated              schema and a batch, but no end-of-stream marker
//	trailing               a complete stream, then more bytes
//	timestamp              a column of a type connectors never return
//	bad-offsets            a string column whose offsets run backwards
//	huge-meta              a message claiming 2 GiB of metadata
//	negative-meta          a message claiming negative metadata length
func (d *double) Query(ctx context.Context, q connector.Query, w io.Writer) error {
	f := strings.Fields(q.SQL)
	switch f[0] {
	case "echo":
		return echo(q.Args, w)
	case "rows":
		n, _ := strconv.Atoi(f[1])
		b, _ := strconv.Atoi(f[3])
		pad := 0
		if len(f) > 5 {
			pad, _ = strconv.Atoi(f[5])
		}
		return rows(ctx, q, w, n, b, pad)
	case "slow":
		return d.slow(ctx, w)
	case "crash-after":
		k, _ := strconv.Atoi(f[1])
		// Batches of about 100 KiB, so that some chunks leave before
		// the crash.
		iw := ipc.NewWriter(w, ipc.WithSchema(rowsSchema))
		for i := range k {
			if err := writeBatch(iw, i*1000, 1000, 100); err != nil {
				return err
			}
		}
		os.Exit(2)
	case "hang":
		time.Sleep(time.Hour)
	case "error":
		return errors.New("Catalog Error: Table with name nope does not exist")
	case "garbage":
		_, err := w.Write([]byte("this is not an Arrow IPC stream at all, not even close"))
		return err
	case "truncated":
		iw := ipc.NewWriter(w, ipc.WithSchema(rowsSchema))
		return writeBatch(iw, 0, 5, 0) // and no Close: no end-of-stream marker
	case "trailing":
		iw := ipc.NewWriter(w, ipc.WithSchema(rowsSchema))
		if err := writeBatch(iw, 0, 5, 0); err != nil {
			return err
		}
		if err := iw.Close(); err != nil {
			return err
		}
		_, err := w.Write([]byte("extra"))
		return err
	case "timestamp":
		schema := arrow.NewSchema([]arrow.Field{{Name: "t", Type: arrow.FixedWidthTypes.Timestamp_us}}, nil)
		iw := ipc.NewWriter(w, ipc.WithSchema(schema))
		return iw.Close()
	case "bad-offsets":
		return badOffsets(w)
	case "huge-meta":
		return writeWords(w, 0xFFFFFFFF, 0x7FFFFFF0)
	case "negative-meta":
		return writeWords(w, 0xFFFFFFFF, 0x80000000)
	}
	return fmt.Errorf("plugin-double: unknown command %q", f[0])
}

var rowsSchema = arrow.NewSchema([]arrow.Field{
	{Name: "n", Type: arrow.PrimitiveTypes.Int64},
	{Name: "s", Type: arrow.BinaryTypes.String},
}, nil)

func writeBatch(iw *ipc.Writer, from, n, pad int) error {
	b := array.NewRecordBuilder(memory.DefaultAllocator, rowsSchema)
	defer b.Release()
	ns, ss := b.Field(0).(*array.Int64Builder), b.Field(1).(*array.StringBuilder)
	for i := from; i < from+n; i++ {
		ns.Append(int64(i))
		ss.Append(strconv.Itoa(i) + strings.Repeat("x", pad))
	}
	rec := b.NewRecord()
	defer rec.Release()
	return iw.Write(rec)
}

func rows(ctx context.Context, q connector.Query, w io.Writer, n, batch, pad int) error {
	iw := ipc.NewWriter(w, ipc.WithSchema(rowsSchema))
	for i := 0; i < n; i += batch {
		if err := ctx.Err(); err != nil {
			return err
		}
		k := min(batch, n-i)
		if err := q.CheckRows(int64(i + k)); err != nil {
			return err
		}
		if err := writeBatch(iw, i, k, pad); err != nil {
			return err
		}
	}
	return iw.Close()
}

func (d *double) slow(ctx context.Context, w io.Writer) error {
	iw := ipc.NewWriter(w, ipc.WithSchema(rowsSchema))
	for i := 0; ; i++ {
		if err := writeBatch(iw, i, 1, 0); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			d.logger.Info("plugin-double: slow query cancelled", "error", ctx.Err())
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// echo returns one row holding each argument in a column of its type.
func echo(args []connector.Value, w io.Writer) error {
	var fields []arrow.Field
	for i, a := range args {
		var t arrow.DataType
		switch a.Kind() {
		case connector.KindNull, connector.KindInt64:
			t = arrow.PrimitiveTypes.Int64
		case connector.KindString:
			t = arrow.BinaryTypes.String
		case connector.KindFloat64:
			t = arrow.PrimitiveTypes.Float64
		case connector.KindBool:
			t = arrow.FixedWidthTypes.Boolean
		case connector.KindDate:
			t = arrow.FixedWidthTypes.Date32
		case connector.KindStringList:
			t = arrow.ListOf(arrow.BinaryTypes.String)
		}
		fields = append(fields, arrow.Field{Name: fmt.Sprintf("a%d", i+1), Type: t, Nullable: true})
	}
	schema := arrow.NewSchema(fields, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	for i, a := range args {
		switch fb := b.Field(i).(type) {
		case *array.Int64Builder:
			if a.Kind() == connector.KindNull {
				fb.AppendNull()
			} else {
				fb.Append(a.Any().(int64))
			}
		case *array.StringBuilder:
			fb.Append(a.Any().(string))
		case *array.Float64Builder:
			fb.Append(a.Any().(float64))
		case *array.BooleanBuilder:
			fb.Append(a.Any().(bool))
		case *array.Date32Builder:
			days, _ := a.Days()
			fb.Append(arrow.Date32(days))
		case *array.ListBuilder:
			fb.Append(true)
			vb := fb.ValueBuilder().(*array.StringBuilder)
			for _, s := range a.Any().([]string) {
				vb.Append(s)
			}
		}
	}
	rec := b.NewRecord()
	defer rec.Release()
	iw := ipc.NewWriter(w, ipc.WithSchema(schema))
	if err := iw.Write(rec); err != nil {
		return err
	}
	return iw.Close()
}

// badOffsets writes a valid stream around a string column whose offsets
// run backwards: [0, 5, 2] over 5 bytes. The Arrow writer copies buffers
// as they are, so the lie reaches the wire.
func badOffsets(w io.Writer) error {
	schema := arrow.NewSchema([]arrow.Field{{Name: "s", Type: arrow.BinaryTypes.String}}, nil)
	offsets := memory.NewBufferBytes(arrow.Int32Traits.CastToBytes([]int32{0, 5, 2}))
	values := memory.NewBufferBytes([]byte("hello"))
	data := array.NewData(arrow.BinaryTypes.String, 2, []*memory.Buffer{nil, offsets, values}, nil, 0, 0)
	defer data.Release()
	col := array.NewStringData(data)
	defer col.Release()
	rec := array.NewRecord(schema, []arrow.Array{col}, 2)
	defer rec.Release()
	iw := ipc.NewWriter(w, ipc.WithSchema(schema))
	if err := iw.Write(rec); err != nil {
		return err
	}
	return iw.Close()
}

func writeWords(w io.Writer, words ...uint32) error {
	var buf bytes.Buffer
	for _, x := range words {
		_ = binary.Write(&buf, binary.LittleEndian, x)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// rawPlugin serves rawServer in place of connector's own server.
type rawPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	d *double
}

func (p *rawPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	connectorv1.RegisterConnectorServer(s, &rawServer{d: p.d})
	return nil
}

func (p *rawPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, errors.New("plugin-double is a plugin, not a host")
}

// rawServer breaks the protocol in ways connector.Serve never would:
//
//	flood          a valid stream far past max_bytes, ignoring the limit
//	many-rows      a valid stream far past max_rows, ignoring the limit
//	no-done        a complete Arrow stream, then the call ends without QueryDone
//	lie-done       QueryDone counting more bytes than were sent
//	after-done     a chunk after QueryDone
type rawServer struct {
	connectorv1.UnimplementedConnectorServer
	d *double
}

func (s *rawServer) Describe(ctx context.Context, _ *connectorv1.DescribeRequest) (*connectorv1.DescribeResponse, error) {
	d, _ := s.d.Describe(ctx)
	resp := &connectorv1.DescribeResponse{Dialect: string(d.Dialect), PluginVersion: d.PluginVersion, CdmVersion: int32(d.CDMVersion)}
	for _, t := range d.Tables {
		resp.Tables = append(resp.Tables, &connectorv1.TableInfo{Name: t.Name, Rows: t.Rows})
	}
	return resp, nil
}

func (s *rawServer) Query(req *connectorv1.QueryRequest, stream grpc.ServerStreamingServer[connectorv1.QueryResponse]) error {
	var buf bytes.Buffer
	iw := ipc.NewWriter(&buf, ipc.WithSchema(rowsSchema))
	n := 100
	switch req.GetSql() {
	case "flood":
		n = 200_000
	case "many-rows":
		n = int(req.GetMaxRows()) + 1000
	}
	for i := 0; i < n; i += 100 {
		if err := writeBatch(iw, i, 100, 0); err != nil {
			return err
		}
	}
	if err := iw.Close(); err != nil {
		return err
	}
	send := func(p []byte) error {
		return stream.Send(&connectorv1.QueryResponse{Part: &connectorv1.QueryResponse_ArrowIpc{ArrowIpc: p}})
	}
	done := func(bytes int64) error {
		return stream.Send(&connectorv1.QueryResponse{Part: &connectorv1.QueryResponse_Done{Done: &connectorv1.QueryDone{Bytes: bytes}}})
	}
	data := buf.Bytes()
	for len(data) > 0 {
		k := min(len(data), 64<<10)
		if err := send(data[:k]); err != nil {
			return err
		}
		data = data[k:]
	}
	total := int64(buf.Len())
	switch req.GetSql() {
	case "no-done":
		return nil
	case "lie-done":
		return done(total + 1)
	case "after-done":
		if err := done(total); err != nil {
			return err
		}
		return send([]byte("late"))
	}
	return done(total)
}
