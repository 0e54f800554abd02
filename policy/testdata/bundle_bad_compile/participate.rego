package haven.participate

decision := {"allow": false, "reasons": [{"code": "test_only", "message": "this test bundle decides nothing"}]}
