# haven/submit is missing altogether.
package haven.submit

allow := false
