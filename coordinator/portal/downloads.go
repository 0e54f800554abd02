package portal

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"

	"github.com/havenhealth/haven/client"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/release"
)

// table fetches a run's released table as the signed-in person, by the
// rule Flight DoGet applies (dispatch.Release): the requester or an
// operator. It has written the error page when ok is false.
func (p *Portal) table(w http.ResponseWriter, r *http.Request, s session) (ipcBytes []byte, ok bool) {
	id := r.PathValue("id")
	if err := havenv1.CheckID(id); err != nil {
		http.NotFound(w, r)
		return nil, false
	}
	b, err := p.cfg.Releases.Release(r.Context(), p.principal(s), id)
	if err != nil {
		p.apiError(w, r, "fetch released table", err)
		return nil, false
	}
	return b, true
}

func attachment(w http.ResponseWriter, contentType, name string) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	w.Header().Set("Cache-Control", "no-store")
}

// downloadArrow sends the released table exactly as the coordinator
// stored it: the Arrow IPC stream with its provenance and signature in the
// schema metadata, which `haven query verify` checks.
func (p *Portal) downloadArrow(w http.ResponseWriter, r *http.Request, s session) {
	b, ok := p.table(w, r, s)
	if !ok {
		return
	}
	attachment(w, "application/vnd.apache.arrow.stream", r.PathValue("id")+".arrow")
	w.Write(b)
}

// downloadCSV sends the table as `haven query fetch --format csv` writes
// it (client.WriteCSV): values exactly as released, each with a
// <measure>__withheld column giving the reason one is missing.
func (p *Portal) downloadCSV(w http.ResponseWriter, r *http.Request, s session) {
	b, ok := p.table(w, r, s)
	if !ok {
		return
	}
	tab, err := release.ReadIPC(bytes.NewReader(b))
	if err != nil {
		p.fail(w, r, "read the released table", err)
		return
	}
	var buf bytes.Buffer
	if err := client.WriteCSV(&buf, tab); err != nil {
		p.fail(w, r, "write the table as CSV", err)
		return
	}
	attachment(w, "text/csv; charset=utf-8", r.PathValue("id")+".csv")
	w.Write(buf.Bytes())
}

// snippets are ready-to-paste code that fetches a run's table outside the
// portal: Python over Arrow Flight from the coordinator (with the
// person's network certificate, as `haven query` uses), and R reading the
// Arrow file downloaded here.
type snippets struct{ Python, R string }

// snippetsFor writes the snippets of run runID. The Python one asks the
// coordinator for the table's FlightInfo by its descriptor (["runs", run
// id], havenv1.RunDescriptor) and fetches it with the ticket the info
// gives, as any Flight client does; no hand-built ticket.
func snippetsFor(runID, flightAddr string) (snippets, error) {
	if err := havenv1.CheckID(runID); err != nil {
		return snippets{}, fmt.Errorf("run %w", err)
	}
	host, port := flightAddr, "7443"
	if i := strings.LastIndexByte(flightAddr, ':'); i > 0 {
		host, port = flightAddr[:i], flightAddr[i+1:]
	}
	py := `import pyarrow.flight as flight

# Your Haven user certificate and key (as for haven query), and the network CA.
client = flight.FlightClient(
    "grpc+tls://` + host + `:` + port + `",
    tls_root_certs=open("ca.crt", "rb").read(),
    cert_chain=open("user.crt", "rb").read(),
    private_key=open("user.key", "rb").read(),
)
# With a bearer token instead of a certificate, pass
#   options=flight.FlightCallOptions(headers=[(b"authorization", b"Bearer " + token)])
# to each call below.
# The released table of run ` + runID + `: its schema, size and the ticket that fetches it.
info = client.get_flight_info(flight.FlightDescriptor.for_path("` + havenv1.RunDescriptorPrefix + `", "` + runID + `"))
table = client.do_get(info.endpoints[0].ticket).read_all()
df = table.to_pandas()  # withheld values are null; <measure>__withheld says why
# Every released table of yours: for f in client.list_flights(): print(f.descriptor.path, f.total_records)
`
	rs := `library(arrow)

# The Arrow file downloaded from this page: the table exactly as released,
# with its provenance and signature in the schema metadata.
table <- read_ipc_stream("` + runID + `.arrow", as_data_frame = FALSE)
df <- as.data.frame(table)  # withheld values are NA; <measure>__withheld says why
`
	return snippets{Python: py, R: rs}, nil
}
