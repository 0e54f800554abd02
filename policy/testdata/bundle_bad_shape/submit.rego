# Allow must be a boolean; a string "yes" is not permission.
package haven.submit

decision := {"allow": "yes", "reasons": []}
