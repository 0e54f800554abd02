# x is unsafe: it is used but never bound, so the bundle does not compile.
package haven.submit

decision := {"allow": x, "reasons": []}
