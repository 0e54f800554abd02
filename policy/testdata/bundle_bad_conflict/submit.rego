# Two values for one complete rule: an evaluation error, not a choice.
package haven.submit

decision := {"allow": true, "reasons": []}

decision := {"allow": false, "reasons": [{"code": "no", "message": "no"}]} if input.purpose
