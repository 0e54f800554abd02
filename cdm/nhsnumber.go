package cdm

import (
	"errors"
	"fmt"
)

// Errors returned by CheckNHSNumber. They never include the number itself,
// so they are safe to log.
var (
	ErrNHSNumberLength     = errors.New("nhs number: not 10 characters")
	ErrNHSNumberNotDigits  = errors.New("nhs number: not all digits")
	ErrNHSNumberCheckDigit = errors.New("nhs number: check digit does not match")
	ErrNHSNumberNoCheck    = errors.New("nhs number: modulus 11 gives 10, so no valid number has these first nine digits")
)

// NHSCheckDigit computes the modulus-11 check digit for the first nine
// digits of an NHS number (NHS Data Dictionary, "NHS NUMBER"): weight the
// digits 10 down to 2, sum, take 11 minus the remainder mod 11; 11 becomes 0
// and 10 means the nine digits cannot start a valid number (ok is false).
func NHSCheckDigit(first9 [9]byte) (digit byte, ok bool) {
	sum := 0
	for i, d := range first9 {
		sum += int(d) * (10 - i)
	}
	c := 11 - sum%11
	switch c {
	case 11:
		return 0, true
	case 10:
		return 0, false
	}
	return byte(c), true
}

// CheckNHSNumber reports why s is not a valid NHS number, or nil if it is.
// Only the bare 10-digit form is accepted: the CDM stores numbers without
// spaces, and a connector that normalises formatting does so before this.
func CheckNHSNumber(s string) error {
	if len(s) != 10 {
		return ErrNHSNumberLength
	}
	var first9 [9]byte
	for i := 0; i < 10; i++ {
		if s[i] < '0' || s[i] > '9' {
			return ErrNHSNumberNotDigits
		}
		if i < 9 {
			first9[i] = s[i] - '0'
		}
	}
	want, ok := NHSCheckDigit(first9)
	if !ok {
		return ErrNHSNumberNoCheck
	}
	if s[9]-'0' != want {
		return ErrNHSNumberCheckDigit
	}
	return nil
}

// ValidNHSNumber reports whether s is a 10-digit NHS number whose check
// digit matches.
func ValidNHSNumber(s string) bool { return CheckNHSNumber(s) == nil }

// NHSNumberFromSerial makes the valid NHS number whose first nine digits
// are the smallest at or after serial (0 ≤ serial < 10⁹) that has a check
// digit; it returns the number and the serial it used. Synthetic data and
// tests use it to mint numbers that pass validation.
func NHSNumberFromSerial(serial uint32) (string, uint32, error) {
	for s := serial; s < 1_000_000_000; s++ {
		var first9 [9]byte
		v := s
		for i := 8; i >= 0; i-- {
			first9[i] = byte(v % 10)
			v /= 10
		}
		d, ok := NHSCheckDigit(first9)
		if !ok {
			continue
		}
		var buf [10]byte
		for i, x := range first9 {
			buf[i] = '0' + x
		}
		buf[9] = '0' + d
		return string(buf[:]), s, nil
	}
	return "", 0, fmt.Errorf("nhs number: no valid number at or after serial %d", serial)
}
