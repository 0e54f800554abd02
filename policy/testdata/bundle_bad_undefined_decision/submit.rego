# The decision is defined but has no value for any input.
package haven.submit

decision := {"allow": true, "reasons": []} if input.never_sent
