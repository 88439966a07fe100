// Package yamlstrict decodes the YAML files people write by hand (the verifier's and the agent's
// configuration, an audit inventory) so that a mistake fails loudly instead of being dropped:
// unknown keys are errors, and so is anything after the first document. yaml.v3 stops reading at
// a "---"; without the second check a configuration whose TLS and token sections followed a stray
// "---" would load without them, and the verifier would serve plain HTTP with no tokens.
package yamlstrict

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"gopkg.in/yaml.v3"
)

// Decode decodes the one YAML document in data into v, refusing unknown fields. It returns io.EOF
// itself when data holds no document (an empty file), so that callers can take the defaults.
func Decode(data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		return err
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
		return nil
	case err != nil:
		return fmt.Errorf("after the first YAML document: %w", err)
	}
	if extra.Kind == 0 || (extra.Kind == yaml.DocumentNode && len(extra.Content) == 0) {
		return errors.New(`the file holds more than one YAML document: only the first would be read; remove the "---" separators`)
	}
	return fmt.Errorf(`the file holds more than one YAML document (the second starts at line %d): only the first would be read; remove the "---" separators`, extra.Line)
}
