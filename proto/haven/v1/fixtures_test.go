package havenv1

import (
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Fully populated messages for the tests: every field set to a value other
// than its zero value. TestFixturesCoverEveryField keeps them honest when
// the contract grows.

var t0 = time.Date(2025, 4, 1, 9, 30, 0, 123456789, time.UTC)

func at(minutes int) *timestamppb.Timestamp {
	return timestamppb.New(t0.Add(time.Duration(minutes) * time.Minute))
}

// params holds one parameter of each kind, so every ParameterValue member
// is exercised.
func params() map[string]*ParameterValue {
	return map[string]*ParameterValue{
		"followup_days": {Value: &ParameterValue_IntValue{IntValue: 365}},
		"index_date":    {Value: &ParameterValue_DateValue{DateValue: "2024-04-01"}},
		"sex":           {Value: &ParameterValue_EnumValue{EnumValue: "F"}},
		"condition":     {Value: &ParameterValue_CodelistName{CodelistName: "t2dm"}},
	}
}

func reasons() []*PolicyReason {
	return []*PolicyReason{
		{Code: "purpose_not_allowed", Message: `purpose "marketing" is not approved for this definition`},
		{Code: "site_paused", Message: "site paused by provider IT"},
	}
}

func pauseState() *PauseState {
	return &PauseState{Paused: true, Reason: "data warehouse maintenance", Since: at(-60)}
}

func connectorInfo() *ConnectorInfo {
	return &ConnectorInfo{
		Dialect:       "duckdb",
		PluginName:    "haven-connector-duckdb",
		PluginVersion: "v0.1.0",
		Tables: []*TableInfo{
			{Name: "patient", RowCount: 10234},
			{Name: "clinical_event", RowCount: 412876},
		},
	}
}

func taskDone() *TaskDone {
	return &TaskDone{
		TaskId:                       "task-42",
		Rows:                         1800,
		Bytes:                        73_000,
		Batches:                      2,
		Fields:                       []string{"pseudonym", "age_band", "sex"},
		RowsExcludedInvalidNhsNumber: 3,
		RowsExcludedOptOut:           41,
		Duration:                     durationpb.New(2500 * time.Millisecond),
	}
}

func taskFailed() *TaskFailed {
	return &TaskFailed{TaskId: "task-43", Code: TaskErrorCode_TASK_ERROR_CODE_ABANDONED, Message: "node restarted during upload"}
}

func taskRefused() *TaskRefused {
	return &TaskRefused{TaskId: "task-44", Reasons: reasons(), DecisionId: "dec-9", BundleRevision: "rev-7"}
}

func register() *Register {
	return &Register{
		SiteOds:              "A81001",
		SiteKind:             SiteKind_SITE_KIND_GP,
		NodeVersion:          "v0.3.1",
		CdmVersion:           1,
		BundleRevision:       "rev-7",
		Connector:            connectorInfo(),
		RegisteredPopulation: 10234,
		Pause:                pauseState(),
		UnreportedOutcomes: []*TaskOutcome{
			{Outcome: &TaskOutcome_Done{Done: taskDone()}},
			{Outcome: &TaskOutcome_Failed{Failed: taskFailed()}},
			{Outcome: &TaskOutcome_Refused{Refused: taskRefused()}},
		},
		RunningTaskIds:       []string{"task-45"},
		LinkageKeyId:         "lk-2025-1",
		NetworkOptOutVersion: &NetworkOptOutVersion{Epoch: "E4QZ", Seq: 41},
		ActivityRecords:      138_935,
	}
}

func task() *Task {
	return &Task{
		RecordKeyRange:    256,
		TaskId:            "task-42",
		RunId:             "run-2025-0001",
		DefinitionId:      "t2dm-emergency-admissions",
		DefinitionVersion: 3,
		DefinitionHash:    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		Parameters:        params(),
		Purpose:           "commissioning",
		RequesterOrg:      "QWE",
		Mode:              PlanMode_PLAN_MODE_LINKAGE,
		SiteKind:          SiteKind_SITE_KIND_GP,
		OutputFields:      []string{"pseudonym", "age_band", "sex"},
		Limits:            &UploadLimits{MaxRows: 1_000_000, MaxBytes: 64 << 20, MaxBatchBytes: 4 << 20},
		Deadline:          at(120),
		IssuedAt:          at(0),
		BundleRevision:    "rev-7",
		SubmitDecisionId:  "dec-1",
	}
}

func registered() *Registered {
	return &Registered{
		SessionId:              "sess-1",
		ServerTime:             at(0),
		HeartbeatInterval:      durationpb.New(15 * time.Second),
		AcceptedBundleRevision: "rev-7",
	}
}

func parameterSpecs() []*ParameterSpec {
	return []*ParameterSpec{
		{
			Name:         "followup_days",
			Type:         ParameterType_PARAMETER_TYPE_INT,
			Description:  "days after the index date to count admissions",
			Min:          &ParameterValue{Value: &ParameterValue_IntValue{IntValue: 30}},
			Max:          &ParameterValue{Value: &ParameterValue_IntValue{IntValue: 730}},
			DefaultValue: &ParameterValue{Value: &ParameterValue_IntValue{IntValue: 365}},
			ApprovedGrid: "one of 30, 90, 180, 365, 730",
		},
		{
			Name:          "sex",
			Type:          ParameterType_PARAMETER_TYPE_ENUM,
			Description:   "restrict to one recorded sex",
			AllowedValues: []string{"F", "M", "I", "U"},
		},
	}
}

func definition() *DefinitionSummary {
	return &DefinitionSummary{
		Id:          "t2dm-emergency-admissions",
		Version:     3,
		Title:       "Emergency admissions among adults with type 2 diabetes",
		Description: "Counts adults with type 2 diabetes and their emergency admissions.",
		Sha256:      "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		Mode:        PlanMode_PLAN_MODE_LINKAGE,
		Parameters:  parameterSpecs(),
		Approval: &Approval{
			Approver:        "Example ICB Data Access Committee",
			ApprovedAt:      at(-100_000),
			ExpiresAt:       at(400_000),
			AllowedPurposes: []string{"commissioning", "service_evaluation"},
			AllowedRoles:    []string{"analyst", "commissioner"},
		},
		GroupBy:        []string{"age_band", "sex"},
		Measures:       []string{"patients", "admitted", "admissions"},
		CallerPurposes: []string{"service_evaluation"},
	}
}

func siteStatus() *SiteStatus {
	return &SiteStatus{
		SiteOds:   "RXX",
		Kind:      SiteKind_SITE_KIND_TRUST,
		State:     SiteState_SITE_STATE_FAILED,
		Reasons:   reasons(),
		Rows:      120,
		Bytes:     4096,
		Error:     "connector: connection refused",
		UpdatedAt: at(5),

		OptOutsHonoured: 37,
	}
}

func run() *Run {
	return &Run{
		Id:                "run-2025-0001",
		DefinitionId:      "t2dm-emergency-admissions",
		DefinitionVersion: 3,
		DefinitionHash:    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		Parameters:        params(),
		Purpose:           "commissioning",
		Requester:         &Requester{Id: "analyst@qwe.example", Org: "QWE", Roles: []string{"analyst"}},
		Mode:              PlanMode_PLAN_MODE_LINKAGE,
		State:             RunState_RUN_STATE_RELEASED,
		SubmittedAt:       at(0),
		UpdatedAt:         at(9),
		Deadline:          at(120),
		FinishedAt:        at(9),
		PolicyReasons:     reasons(),
		Coverage: &Coverage{
			SitesExpected:      5,
			SitesAnswered:      4,
			PopulationExpected: 52_000,
			PopulationAnswered: 47_500,
			TrustsExpected:     2,
			TrustsAnswered:     1,
			ActivityExpected:   391_083,
			ActivityAnswered:   138_935,
			OptOutsHonoured:    37,
			Sites:              []*SiteStatus{siteStatus()},
		},
		Release: &ReleaseSummary{
			Rows: 16, CellsReleased: 44, CellsWithheld: 4, MinCellCount: 8, RoundingBase: 5,
			PerturbationTable: "haven-ptable-v1",
		},
		QueuePosition:   3,
		Error:           "one site failed",
		ClientRequestId: "req-77",
		BundleRevision:  "rev-7",
	}
}

func runEvent(seq uint64, kind RunEventKind, state RunState) *RunEvent {
	r := run()
	r.State = state
	return &RunEvent{
		Run:           r,
		Kind:          kind,
		PreviousState: RunState_RUN_STATE_LINKING,
		SiteOds:       "RXX",
		Sequence:      seq,
		At:            at(int(seq)),
	}
}

type fixture struct {
	name string
	msg  proto.Message
}

// fixtures returns one fully populated value of every message in the
// package, and one per member of each oneof.
func fixtures() []fixture {
	nm := func(name string, m *NodeMessage) fixture { return fixture{"NodeMessage/" + name, m} }
	cm := func(name string, m *CoordinatorMessage) fixture { return fixture{"CoordinatorMessage/" + name, m} }
	return []fixture{
		// common.proto
		{"ParameterValue/int", params()["followup_days"]},
		{"ParameterValue/date", params()["index_date"]},
		{"ParameterValue/enum", params()["sex"]},
		{"ParameterValue/codelist", params()["condition"]},
		{"PolicyReason", reasons()[0]},
		{"UploadLimits", task().Limits},

		// nodelink.proto
		nm("register", &NodeMessage{Body: &NodeMessage_Register{Register: register()}}),
		nm("heartbeat", &NodeMessage{Body: &NodeMessage_Heartbeat{Heartbeat: &Heartbeat{
			SentAt: at(1), Paused: true, TasksRunning: 2, BundleRevision: "rev-8"}}}),
		nm("pause_state", &NodeMessage{Body: &NodeMessage_PauseState{PauseState: pauseState()}}),
		nm("opt_out_publish", &NodeMessage{Body: &NodeMessage_OptOutPublish{OptOutPublish: &OptOutPublish{
			Hashes: make([]byte, 32), Digest: "374708fff7719dd5979ec875d56cd2286f6d3cf7ec317a3b25632aab28ec37bb"}}}),
		nm("task_accepted", &NodeMessage{Body: &NodeMessage_TaskAccepted{TaskAccepted: &TaskAccepted{
			TaskId: "task-42", SqlHash: "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
			DecisionId: "dec-8", BundleRevision: "rev-7"}}}),
		nm("task_refused", &NodeMessage{Body: &NodeMessage_TaskRefused{TaskRefused: taskRefused()}}),
		nm("task_progress", &NodeMessage{Body: &NodeMessage_TaskProgress{TaskProgress: &TaskProgress{
			TaskId: "task-42", Stage: TaskStage_TASK_STAGE_UPLOADING, Rows: 900, Bytes: 36_000}}}),
		nm("task_done", &NodeMessage{Body: &NodeMessage_TaskDone{TaskDone: taskDone()}}),
		nm("task_failed", &NodeMessage{Body: &NodeMessage_TaskFailed{TaskFailed: taskFailed()}}),
		cm("registered", &CoordinatorMessage{Body: &CoordinatorMessage_Registered{Registered: registered()}}),
		cm("rejected", &CoordinatorMessage{Body: &CoordinatorMessage_Rejected{Rejected: &Rejected{
			Code: RejectCode_REJECT_CODE_IDENTITY_MISMATCH, Message: `certificate names site "B82005", Register says "A81001"`}}}),
		cm("goodbye", &CoordinatorMessage{Body: &CoordinatorMessage_Goodbye{Goodbye: &Goodbye{
			Reason: "coordinator shutting down", ReconnectAfter: durationpb.New(30 * time.Second)}}}),
		cm("heartbeat_ack", &CoordinatorMessage{Body: &CoordinatorMessage_HeartbeatAck{HeartbeatAck: &HeartbeatAck{
			ServerTime: at(2), HeartbeatSentAt: at(1)}}}),
		cm("task", &CoordinatorMessage{Body: &CoordinatorMessage_Task{Task: task()}}),
		cm("network_opt_outs", &CoordinatorMessage{Body: &CoordinatorMessage_NetworkOptOuts{NetworkOptOuts: &NetworkOptOuts{
			Base: &NetworkOptOutVersion{Epoch: "E4QZ", Seq: 41}, Version: &NetworkOptOutVersion{Epoch: "E4QZ", Seq: 42},
			Sets: []*PublisherOptOuts{{PublisherOds: "A81001", Hashes: make([]byte, 16), Digest: "37470",
				Seq: 42, UpdatedAt: at(3)}},
			More: true}}}),
		cm("cancel_task", &CoordinatorMessage{Body: &CoordinatorMessage_CancelTask{CancelTask: &CancelTask{
			TaskId: "task-42", Reason: "run cancelled by requester"}}}),
		{"Register", register()},
		{"OptOutPublish", &OptOutPublish{Hashes: make([]byte, 16), Digest: "374708ff"}},
		{"NetworkOptOutVersion", &NetworkOptOutVersion{Epoch: "E4QZ", Seq: 41}},
		{"PublisherOptOuts", &PublisherOptOuts{PublisherOds: "A81001", Hashes: make([]byte, 16), Digest: "3747", Seq: 42, UpdatedAt: at(3)}},
		{"NetworkOptOuts", &NetworkOptOuts{Base: &NetworkOptOutVersion{Epoch: "E4QZ", Seq: 41},
			Version: &NetworkOptOutVersion{Epoch: "E4QZ", Seq: 42}, More: true}},
		{"ConnectorInfo", connectorInfo()},
		{"TableInfo", connectorInfo().Tables[0]},
		{"Heartbeat", &Heartbeat{SentAt: at(3), Paused: true, TasksRunning: 1, BundleRevision: "rev-7"}},
		{"PauseState", pauseState()},
		{"TaskAccepted", &TaskAccepted{TaskId: "task-1", SqlHash: "ab", DecisionId: "dec-2", BundleRevision: "rev-7"}},
		{"TaskRefused", taskRefused()},
		{"TaskProgress", &TaskProgress{TaskId: "task-1", Stage: TaskStage_TASK_STAGE_QUERYING, Rows: 5, Bytes: 6}},
		{"TaskDone", taskDone()},
		{"TaskFailed", taskFailed()},
		{"TaskOutcome/done", register().UnreportedOutcomes[0]},
		{"TaskOutcome/failed", register().UnreportedOutcomes[1]},
		{"TaskOutcome/refused", register().UnreportedOutcomes[2]},
		{"Registered", registered()},
		{"Rejected", &Rejected{Code: RejectCode_REJECT_CODE_UNKNOWN_SITE, Message: "site not in network"}},
		{"Goodbye", &Goodbye{Reason: "handover", ReconnectAfter: durationpb.New(time.Second)}},
		{"HeartbeatAck", &HeartbeatAck{ServerTime: at(4), HeartbeatSentAt: at(3)}},
		{"Task", task()},
		{"CancelTask", &CancelTask{TaskId: "task-42", Reason: "deadline passed"}},

		// coordinator.proto
		{"ParameterSpec", parameterSpecs()[0]},
		{"Approval", definition().Approval},
		{"DefinitionSummary", definition()},
		{"CodelistSummary", &CodelistSummary{Name: "t2dm", Sha256: "beef", CodeCount: 312}},
		{"ListDefinitionsRequest", &ListDefinitionsRequest{PageSize: 50, PageToken: "p2"}},
		{"ListDefinitionsResponse", &ListDefinitionsResponse{Definitions: []*DefinitionSummary{definition()}, NextPageToken: "p3"}},
		{"GetDefinitionRequest", &GetDefinitionRequest{Id: "t2dm-emergency-admissions", Version: 3}},
		{"GetDefinitionResponse", &GetDefinitionResponse{
			Definition: definition(),
			Source:     "id: t2dm-emergency-admissions\nversion: 3\n",
			Codelists:  []*CodelistSummary{{Name: "t2dm", Sha256: "beef", CodeCount: 312}},
		}},
		{"SubmitRunRequest", &SubmitRunRequest{
			DefinitionId: "t2dm-emergency-admissions", Parameters: params(), Purpose: "commissioning", ClientRequestId: "req-77"}},
		{"SubmitRunResponse", &SubmitRunResponse{Run: run()}},
		{"GetRunRequest", &GetRunRequest{RunId: "run-2025-0001"}},
		{"GetRunResponse", &GetRunResponse{Run: run()}},
		{"WatchRunRequest", &WatchRunRequest{RunId: "run-2025-0001"}},
		{"CancelRunRequest", &CancelRunRequest{RunId: "run-2025-0001", Reason: "wrong index date"}},
		{"CancelRunResponse", &CancelRunResponse{Run: run()}},
		{"ListRunsRequest", &ListRunsRequest{
			PageSize: 20, PageToken: "p1",
			States:       []RunState{RunState_RUN_STATE_RUNNING, RunState_RUN_STATE_LINKING},
			DefinitionId: "t2dm-emergency-admissions",
		}},
		{"ListRunsResponse", &ListRunsResponse{Runs: []*Run{run(), run()}, NextPageToken: "p2"}},
		{"Requester", run().Requester},
		{"SiteStatus", siteStatus()},
		{"Coverage", run().Coverage},
		{"ReleaseSummary", run().Release},
		{"Run", run()},
		{"RunEvent", runEvent(2, RunEventKind_RUN_EVENT_KIND_STATE_CHANGED, RunState_RUN_STATE_RELEASED)},

		// flight.proto
		{"TableTicket", &TableTicket{RunId: "run-2025-0001"}},
		{"UploadReceipt", &UploadReceipt{TaskId: "task-42", Rows: 1800, Bytes: 73_000, Batches: 2}},
	}
}
