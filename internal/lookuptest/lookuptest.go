// Package lookuptest decodes the proxy's JSON lookup answers (GET
// /lookup?key=) for tests, as a strict client would: one object, no field it
// does not know, and a status field equal to the HTTP status.
package lookuptest

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Answer is a JSON answer's body; absent fields stay nil.
type Answer struct {
	Key         *string `json:"key"`
	KeyEncoding string  `json:"key_encoding"`
	Value       *string `json:"value"`
	Encoding    string  `json:"encoding"`
	Status      int     `json:"status"`
	Error       *string `json:"error"`
}

// Decode decodes body, the JSON answer that came with HTTP status status.
func Decode(body []byte, status int) (Answer, error) {
	var a Answer
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		return a, err
	}
	if dec.More() {
		return a, fmt.Errorf("more after the object")
	}
	if a.Status != status {
		return a, fmt.Errorf("status field %d, HTTP status %d", a.Status, status)
	}
	return a, nil
}
