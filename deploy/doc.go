// Package deploy holds Haven's deployment files: a container image, a Compose
// network and systemd units. It has no Go API; its test checks that those
// files agree with the haven command line and with deploy/examples.
package deploy
