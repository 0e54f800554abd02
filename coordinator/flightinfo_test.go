package coordinator_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"testing"

	"github.com/apache/arrow/go/v17/arrow/flight"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/havenhealth/haven/client"
	"github.com/havenhealth/haven/coordinator/coordinatortest"
	"github.com/havenhealth/haven/internal/pki"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/release"
)

// stockFlight is a stock Arrow Flight client, as a person's pyarrow
// would be, presenting the certificate in certFile and keyFile.
func stockFlight(t *testing.T, n *coordinatortest.Network, certFile, keyFile string) flight.Client {
	t.Helper()
	tc, err := pki.ClientTLS(certFile, keyFile, n.CAFile, "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := flight.NewClientWithMiddleware(n.Addr, nil, nil, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// listFlights returns every FlightInfo ListFlights sends.
func listFlights(t *testing.T, ctx context.Context, c flight.Client) ([]*flight.FlightInfo, error) {
	t.Helper()
	stream, err := c.ListFlights(ctx, &flight.Criteria{})
	if err != nil {
		return nil, err
	}
	var out []*flight.FlightInfo
	for {
		info, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, info)
	}
}

// TestFlightInfo lists a commissioner's released tables with a stock
// Flight client, gets a table's info by its descriptor and fetches it with
// the ticket the info gives: the table is the one DoGet gives with a
// hand-built ticket, and the info's schema and row count are its. Only the
// caller's own tables are listed: a colleague's run is not, another
// organisation's user sees none, and GetFlightInfo answers them as DoGet
// does (PermissionDenied, NotFound).
func TestFlightInfo(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := coordinatortest.New(t, coordinatortest.Options{})
	statinsSites(t, ctx, n, 7, 2, 150)
	run := releaseStatins(t, ctx, n, "ana")
	// Bob's run asks another year, or the ledger refuses it as a near
	// duplicate of ana's.
	bobConn := analyst(n, "bob")
	bobs := submit(t, ctx, bobConn, "statins-chd", purpose, map[string]*havenv1.ParameterValue{"index_date": dateParam("2023-04-01")})
	if evs := watch(t, ctx, bobConn, bobs.GetId()); evs[len(evs)-1].GetRun().GetState() != havenv1.RunState_RUN_STATE_RELEASED {
		t.Fatalf("bob's run ended %v", evs[len(evs)-1].GetRun())
	}
	want := fetch(t, ctx, analyst(n, "ana"), run.GetId())
	var wantCSV bytes.Buffer
	if err := client.WriteCSV(&wantCSV, want); err != nil {
		t.Fatal(err)
	}

	anaCert, anaKey := n.UserCert("ana", "QHM", "analyst")
	ana := stockFlight(t, n, anaCert, anaKey)
	infos, err := listFlights(t, ctx, ana)
	if err != nil || len(infos) != 1 {
		t.Fatalf("ana's ListFlights: %d infos, %v; want her one released table", len(infos), err)
	}
	if got := infos[0].GetFlightDescriptor().GetPath(); !slices.Equal(got, []string{"runs", run.GetId()}) {
		t.Errorf("listed descriptor %v", got)
	}
	info, err := ana.GetFlightInfo(ctx, &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{"runs", run.GetId()}})
	if err != nil {
		t.Fatalf("GetFlightInfo: %v", err)
	}
	if info.GetTotalRecords() != int64(len(want.Rows)) || info.GetTotalBytes() <= 0 || len(info.GetEndpoint()) != 1 ||
		!bytes.Equal(info.GetEndpoint()[0].GetTicket().GetTicket(), infos[0].GetEndpoint()[0].GetTicket().GetTicket()) {
		t.Errorf("info: %d records (want %d), %d bytes, endpoints %v", info.GetTotalRecords(), len(want.Rows), info.GetTotalBytes(), info.GetEndpoint())
	}
	schema, err := flight.DeserializeSchema(info.GetSchema(), memory.DefaultAllocator)
	if err != nil {
		t.Fatalf("the info's schema: %v", err)
	}
	if sr, err := ana.GetSchema(ctx, havenv1.RunDescriptor(run.GetId())); err != nil || !bytes.Equal(sr.GetSchema(), info.GetSchema()) {
		t.Errorf("GetSchema: %v; want the info's schema", err)
	}
	stream, err := ana.DoGet(ctx, info.GetEndpoint()[0].GetTicket())
	if err != nil {
		t.Fatalf("DoGet with the info's ticket: %v", err)
	}
	rdr, err := flight.NewRecordReader(stream)
	if err != nil {
		t.Fatalf("DoGet with the info's ticket: %v", err)
	}
	defer rdr.Release()
	if !rdr.Schema().Equal(schema) || !slices.Equal(rdr.Schema().Metadata().Keys(), schema.Metadata().Keys()) {
		t.Errorf("the info's schema is not the table's:\n%v\nwant\n%v", schema, rdr.Schema())
	}
	got, err := release.Read(rdr)
	if err != nil {
		t.Fatal(err)
	}
	var gotCSV bytes.Buffer
	if err := client.WriteCSV(&gotCSV, got); err != nil {
		t.Fatal(err)
	}
	if gotCSV.String() != wantCSV.String() {
		t.Errorf("the table fetched with the info's ticket differs:\n%s\nwant\n%s", gotCSV.String(), wantCSV.String())
	}
	if _, err := ana.GetFlightInfo(ctx, &flight.FlightDescriptor{Type: flight.DescriptorCMD, Cmd: []byte(run.GetId())}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("a CMD descriptor: %v, want InvalidArgument", err)
	}

	// A colleague lists only their own table and may not have ana's.
	bobCert, bobKey := n.UserCert("bob", "QHM", "analyst")
	bob := stockFlight(t, n, bobCert, bobKey)
	if infos, err := listFlights(t, ctx, bob); err != nil || len(infos) != 1 || infos[0].GetFlightDescriptor().GetPath()[1] != bobs.GetId() {
		t.Errorf("bob's ListFlights: %v %v, want his run %s only", infos, err, bobs.GetId())
	}
	if _, err := bob.GetFlightInfo(ctx, havenv1.RunDescriptor(run.GetId())); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a colleague's GetFlightInfo of ana's run: %v, want PermissionDenied", err)
	}
	// Another organisation sees nothing.
	oluCert, oluKey := n.UserCert("olu", "15N", "analyst")
	olu := stockFlight(t, n, oluCert, oluKey)
	if infos, err := listFlights(t, ctx, olu); err != nil || len(infos) != 0 {
		t.Errorf("another organisation's ListFlights: %v %v, want none", infos, err)
	}
	if _, err := olu.GetFlightInfo(ctx, havenv1.RunDescriptor(run.GetId())); status.Code(err) != codes.NotFound {
		t.Errorf("another organisation's GetFlightInfo: %v, want NotFound", err)
	}
	// A node may not list tables.
	nodeCert, nodeKey := n.NodeCert("A81001")
	node := stockFlight(t, n, nodeCert, nodeKey)
	if _, err := listFlights(t, ctx, node); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a node's ListFlights: %v, want PermissionDenied", err)
	}
}
