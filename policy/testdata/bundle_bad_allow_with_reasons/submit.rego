# A decision that allows while giving a reason contradicts itself.
package haven.submit

decision := {"allow": true, "reasons": [{"code": "odd", "message": "allowed, but"}]}
