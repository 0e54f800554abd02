package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestOIDCDevCommand runs haven oidc-dev as the demo does and reads its
// discovery document; a bad file is refused with its field named.
func TestOIDCDevCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "users.yaml")
	os.WriteFile(cfg, []byte(`clients: [{id: haven-portal, secret: portal-secret-0123456789, redirect_uris: ["https://localhost:8444/auth/callback"]}]
users: [{id: ana, username: ana, password: pw, org: QHM, roles: [analyst]}]
`), 0o600)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"oidc-dev", "--config", cfg, "--listen", addr, "--log-format", "json"}, &stdout, &stderr)
	}()
	var disc struct {
		Issuer string `json:"issuer"`
	}
	for i := 0; ; i++ {
		resp, err := http.Get("http://" + addr + "/.well-known/openid-configuration")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&disc)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			break
		}
		if i == 100 {
			t.Fatalf("the provider never answered: %v\n%s", err, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if disc.Issuer != "http://"+addr {
		t.Errorf("issuer %q", disc.Issuer)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("exit %d: %s", code, stderr.String())
	}

	os.WriteFile(cfg, []byte("clients: []\n"), 0o600)
	stderr.Reset()
	if code := run(context.Background(), []string{"oidc-dev", "--config", cfg}, &stdout, &stderr); code == 0 || !strings.Contains(stderr.String(), "clients: at least one client is required") {
		t.Errorf("a config without clients: exit %d, %s", code, stderr.String())
	}
}
