# A built-in error at evaluation: to_number refuses a purpose that is not
# numeric. With strict built-in errors the evaluation fails instead of being
# quietly undefined.
package haven.submit

decision := {"allow": n > 0, "reasons": []} if n := to_number(input.purpose)
