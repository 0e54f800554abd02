# A decision that takes far longer than any timeout: 64 million steps
# that never match.
package haven.submit

decision := {"allow": count(pairs) == 0, "reasons": []}

pairs contains [i, j] if {
	some i in numbers.range(1, 8000)
	some j in numbers.range(1, 8000)
	i == j + 8000
}
