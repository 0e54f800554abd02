# A site module may not reach the network.
package haven.site

deny contains "remote says no" if {
	http.send({"method": "GET", "url": "https://example.org/ok"}).status_code != 200
}
