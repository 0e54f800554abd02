package demo

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// EditData returns an Options.EditBundle that rewrites the copied bundle's
// data.json (approvals, thresholds, ledger rules) through edit before it
// is signed. edit's error, naming what it expected and did not find,
// stops the demo.
func EditData(edit func(data map[string]any) error) func(dir string) error {
	return EditJSON("data.json", edit)
}

// EditJSON returns an Options.EditBundle that rewrites the JSON object in
// the bundle's file name through edit.
func EditJSON(name string, edit func(data map[string]any) error) func(dir string) error {
	return func(dir string) error {
		path := filepath.Join(dir, name)
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var data map[string]any
		if err := json.Unmarshal(b, &data); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if err := edit(data); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if b, err = json.MarshalIndent(data, "", "  "); err != nil {
			return err
		}
		return os.WriteFile(path, b, 0o644)
	}
}

// Object returns data's member name as an object, or an error naming it.
func Object(data map[string]any, name string) (map[string]any, error) {
	o, ok := data[name].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("no %s object", name)
	}
	return o, nil
}
