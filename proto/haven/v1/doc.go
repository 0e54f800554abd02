/*
Package havenv1 is Haven's wire contract, version 1: the messages and
services that nodes, the coordinator and commissioners exchange, generated
from the .proto files beside this one, plus the helpers that name Arrow
Flight uploads and downloads (flight.go).

There are two services and one data path, all on the coordinator's one
port:

  - NodeLink (nodelink.proto) is the control link between a node and the
    coordinator: register, heartbeat, tasks and their outcomes.
  - Coordinator (coordinator.proto) is the commissioner API: the approved
    catalogue, submitting and watching runs.
  - Arrow Flight carries data: a node uploads a task's partial result with
    DoPut, and a commissioner fetches a released table with DoGet
    (flight.proto, flight.go).

# Nodes dial out

A node sits inside a GP practice or hospital trust network, which accepts no
inbound connections and should not have to. So the coordinator never dials a
node: each node opens one long-lived, mutually authenticated TLS connection
to the coordinator and calls NodeLink.Connect, a bidirectional stream that
the coordinator then uses to send the node work. Everything the coordinator
asks of a site travels down a stream the site opened, and the site can end
it at any moment.

	  provider network (no inbound)           coordinator
	+--------------------------------+       +------------------------+
	|  node ---- Connect (mTLS) -----+-------> NodeLink    (control)  |
	|       \--- DoPut per task -----+-------> Flight      (data)     |
	+--------------------------------+       |                        |
	                   commissioner ---------> Coordinator, DoGet     |
	                                         +------------------------+

There is one stream per node. If a second link arrives for a site, the
coordinator keeps the newer one and ends the older, which is most likely a
half-open connection the node has already given up on.

# Identity

A node is who its client certificate says it is. The network's certificate
authority issues each node a certificate that names its site's ODS code,
and the coordinator takes the site from the certificate, not from the
stream. The node's first message, Register, repeats the ODS code and adds
what the coordinator cannot know: site kind, software, CDM and governance
bundle versions, connector, table sizes, registered population, pause
state. If Register names a site other than the certificate's, the
coordinator answers Rejected (REJECT_CODE_IDENTITY_MISMATCH) and closes the
stream. Otherwise it answers Registered, with a session id, its clock and
the heartbeat interval, and the link is up.

# The network type 1 opt-out list

A patient's type 1 objection must hold wherever her record sits, not only
at the practice that records it. Each GP node sends OptOutPublish after
registering and whenever its own type 1 list changes: the whole list, as
HMAC-SHA256(k_net, nhs_number)[:16], k_net derived from the network
linkage secret with its own HKDF salt (node/pseudonym), so the
coordinator, which never holds the secret, relays values it cannot read.
The coordinator keeps each practice's list in its job store and numbers
the network list (epoch of the store, seq of accepted changes). Register
names the version the node holds; right after Registered, before any
task, the coordinator sends NetworkOptOuts with what changed since (or
the whole list, in chunks of about 1 MiB marked more), and each later
change goes down every link as it is accepted. A node applies an update
only to the version it names as base; on a gap it drops the link, and
its next Register resynchronises it. A node that has never received the
list runs no task.

# Heartbeat and reconnect

A node sends Heartbeat every Registered.heartbeat_interval and the
coordinator answers HeartbeatAck. A coordinator that hears nothing for
several intervals treats the link as dead and the site as disconnected; a
node that hears nothing does the same and reconnects. Reconnecting is a
loop: dial, Register, and on failure wait a jittered, capped backoff that
resets after a link has stayed up. Goodbye asks a node to go away in good
order and may say how long to wait before coming back.

When the link drops, a task the node is running is not lost. The node
either finishes it, including its Flight upload once the coordinator is
reachable again, or, if it cannot (deadline passed, node restarting),
abandons it. Either way it tells the coordinator in its next Register:
tasks still running are listed in running_task_ids, and the outcome of
each task that ended while the link was down, or whose final message may
not have arrived, goes in unreported_outcomes (TaskDone, or TaskFailed with
TASK_ERROR_CODE_ABANDONED). Outcomes are keyed by task id and the
coordinator ignores one it already holds, so a node that is unsure
reports again. The coordinator cancels any still-running task it no longer
wants; a task in neither list never reached the node.

# One run

A commissioner asks for a run; the coordinator checks it, plans it and sends
one Task to each node the plan needs; each node decides for itself, runs the
query against local data, and uploads only what the plan allows; the
coordinator combines, applies disclosure control and releases.

	commissioner            coordinator                       node (each site)
	     |                       |                                   |
	     |-- SubmitRun --------->|                                   |
	     |                       | policy haven/submit               |
	     |                       | plan (aggregate or linkage)       |
	     |<-- Run (PENDING) -----|                                   |
	     |-- WatchRun ---------->|                                   |
	     |<-- RunEvent SNAPSHOT -|                                   |
	     |                       |== Task (on the node's stream) ===>|
	     |                       |                                   | policy haven/participate
	     |                       |                                   |   + haven/site rules
	     |                       |<== TaskAccepted / TaskRefused ====|
	     |<-- RunEvent ----------|                                   | compile SQL, query,
	     |                       |<== TaskProgress ==================|   drop opt-outs
	     |                       |<-- Flight DoPut ------------------| descriptor = task id
	     |                       |    (Arrow record batches)         |
	     |                       |--> PutResult (UploadReceipt) ---->|
	     |                       |<== TaskDone ======================|
	     |<-- RunEvent ----------|                                   |
	     |                       | link pseudonyms / add cells       |
	     |                       | policy haven/disclose             |
	     |                       | suppress, round, release          |
	     |<-- RunEvent RELEASED -|                                   |
	     |-- Flight DoGet ------>| ticket = TableTicket{run_id}      |
	     |<-- released table ----|                                   |

	  ==> messages on the node's NodeLink.Connect stream
	  --> separate RPCs (Coordinator service, Flight) on the same port

A node runs a task only if the definition hash is in its signed bundle, its
own policy allows the task, and the run id is new to it (a repeated run id
could link two results, DESIGN §7); otherwise it sends TaskRefused with the
reasons, having queried nothing. A run whose sites refuse, fail or time out
is released or not as haven/disclose decides, and its Coverage says which
sites answered.

# Compatibility

Field numbers are never reused: a removed field's number and name go into a
reserved statement. Enums start at a *_UNSPECIFIED zero value so that an
unset field is never mistaken for a real one. The Go code is generated by
scripts/gen-proto.sh (make proto) and committed.
*/
package havenv1
