# METADATA
# title: Example site policy
# description: |
#   A site's own narrowing of the governance bundle: what a GP practice or
#   trust might load beside the board's signed bundle (node config
#   site_modules). It lives outside policy/bundle on purpose: everything in
#   the bundle is signed and active at every node, while this is one site's
#   choice.
#
#   A site module may only add rules under package haven.site. The bundle's
#   haven/participate denies for every element of data.haven.site.deny, so a
#   site can refuse more than the bundle does but never allow more. Each
#   element is {code, message} (or a plain string).
#
#   This site
#     * takes no part in research queries: its patient participation group
#       asked for that, pending its own review;
#     * honours its own maintenance pause, given as a window in data the site
#       controls (data.haven.site.maintenance), as well as the node's pause
#       switch, which the bundle already honours.
package haven.site

# Purposes this site refuses, whatever the board approved.
refused_purposes := {"research"}

# Windows in which the site takes no tasks, in RFC 3339. A site would edit
# these (or load them as data); the example ships one in the past.
maintenance := [{"from": "2026-01-10T18:00:00Z", "until": "2026-01-11T06:00:00Z"}]

deny contains {
	"code": "site_purpose_refused",
	"message": sprintf("this site does not take part in %s queries", [input.task.purpose]),
} if {
	input.task.purpose in refused_purposes
}

deny contains {
	"code": "site_maintenance",
	"message": "this site is in a maintenance window and takes no tasks",
} if {
	some w in maintenance
	now := time.parse_rfc3339_ns(input.now)
	now >= time.parse_rfc3339_ns(w.from)
	now < time.parse_rfc3339_ns(w.until)
}

# Belt and braces: the bundle already refuses a paused site, but a site's
# policy should not depend on that to keep its own promise.
deny contains {
	"code": "site_paused",
	"message": "this site is paused by its provider",
} if {
	not input.site.paused == false
}
