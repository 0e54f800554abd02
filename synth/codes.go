package synth

// This file is the one place that lists every clinical code the synthetic
// network records, with its term, so that codelists and the approved
// catalogue can be built from the same source. Codes are real:
//
//   - SNOMED CT concepts (clinical_event.snomed_code, ae_attendance.diagnosis_snomed)
//   - dm+d virtual medicinal products, VMP ids (medication.dmd_code)
//   - ICD-10 diagnoses, with the dot (apc_episode.primary_diagnosis)
//   - OPCS-4 procedures, with the dot (apc_episode.procedures)

// Code systems named in Code.System.
const (
	SystemSNOMED = "snomed"
	SystemDMD    = "dmd"
	SystemICD10  = "icd10"
	SystemOPCS4  = "opcs4"
)

// Code is one code from a clinical terminology with the term a person reads.
type Code struct {
	System string
	Code   string
	Term   string
}

// SNOMED CT codes recorded in the GP clinical_event table.
const (
	SNOMEDType2Diabetes  = "44054006"         // Type 2 diabetes mellitus
	SNOMEDHypertension   = "38341003"         // Hypertensive disorder
	SNOMEDAsthma         = "195967001"        // Asthma
	SNOMEDCOPD           = "13645005"         // Chronic obstructive lung disease
	SNOMEDCHD            = "53741008"         // Coronary arteriosclerosis
	SNOMEDSystolicBP     = "271649006"        // Systolic blood pressure (mmHg)
	SNOMEDHbA1c          = "1107481000000106" // HbA1c level (mmol/mol)
	SNOMEDBMI            = "60621009"         // Body mass index (kg/m2)
	SNOMEDSmoker         = "77176002"         // Smoker
	SNOMEDExSmoker       = "8517006"          // Ex-smoker
	SNOMEDNeverSmoked    = "266919005"        // Never smoked tobacco
	SNOMEDChestPain      = "29857009"         // Chest pain
	SNOMEDAbdominalPain  = "21522001"         // Abdominal pain
	SNOMEDHeadache       = "25064002"         // Headache
	SNOMEDAnkleSprain    = "44465007"         // Sprain of ankle
	SNOMEDHeadInjury     = "82271004"         // Injury of head
	SNOMEDLaceration     = "312608009"        // Laceration - injury
	SNOMEDFracture       = "125605004"        // Fracture of bone
	SNOMEDCOPDExacerbate = "195951007"        // Acute exacerbation of chronic obstructive airways disease
	SNOMEDAsthmaAttack   = "266364000"        // Asthma attack
	SNOMEDHypoglycaemia  = "302866003"        // Hypoglycemia
	SNOMEDHyperglycaemia = "80394007"         // Hyperglycemia
	SNOMEDMyocardialInf  = "22298006"         // Myocardial infarction
	SNOMEDPneumonia      = "233604007"        // Pneumonia
	SNOMEDUTI            = "68566005"         // Urinary tract infectious disease
	SNOMEDSyncope        = "271594007"        // Syncope
	SNOMEDFever          = "386661006"        // Fever
	SNOMEDDizziness      = "404640003"        // Dizziness
	SNOMEDCellulitis     = "128045006"        // Cellulitis
	SNOMEDHipFracture    = "5913000"          // Fracture of neck of femur
	SNOMEDFall           = "1912002"          // Fall
	SNOMEDDyspnoea       = "267036007"        // Dyspnea
)

// dm+d virtual medicinal products (VMP ids) issued in the GP medication table.
const (
	DMDMetformin500     = "325278007"         // Metformin 500mg tablets
	DMDAtorvastatin20   = "320030001"         // Atorvastatin 20mg tablets
	DMDSimvastatin40    = "320000009"         // Simvastatin 40mg tablets
	DMDRamipril5        = "318902004"         // Ramipril 5mg capsules
	DMDLisinopril10     = "318859000"         // Lisinopril 10mg tablets
	DMDAmlodipine5      = "319283006"         // Amlodipine 5mg tablets
	DMDSalbutamol100    = "39113611000001102" // Salbutamol 100micrograms/dose inhaler CFC free
	DMDBeclometasone100 = "35908111000001105" // Beclometasone 100micrograms/dose inhaler CFC free
	DMDTiotropium       = "12197411000001102" // Tiotropium 2.5micrograms/dose solution for inhalation cartridge with device
)

// ICD-10 primary diagnoses of apc_episode rows.
const (
	ICD10T2DMNoComplication = "E11.9" // Type 2 diabetes mellitus without complications
	ICD10T2DMPeripheral     = "E11.5" // Type 2 diabetes mellitus with peripheral circulatory complications
	ICD10T2DMOther          = "E11.6" // Type 2 diabetes mellitus with other specified complications
	ICD10T2DMMultiple       = "E11.7" // Type 2 diabetes mellitus with multiple complications
	ICD10COPDInfection      = "J44.0" // COPD with acute lower respiratory infection
	ICD10COPDExacerbation   = "J44.1" // COPD with acute exacerbation, unspecified
	ICD10AcuteMI            = "I21.9" // Acute myocardial infarction, unspecified
	ICD10NSTEMI             = "I21.4" // Acute subendocardial myocardial infarction
	ICD10UnstableAngina     = "I20.0" // Unstable angina
	ICD10Atherosclerotic    = "I25.1" // Atherosclerotic heart disease
	ICD10Hypertension       = "I10"   // Essential (primary) hypertension
	ICD10Asthma             = "J45.9" // Asthma, unspecified
	ICD10ChestPain          = "R07.4" // Chest pain, unspecified
	ICD10AbdominalPain      = "R10.4" // Other and unspecified abdominal pain
	ICD10Appendicitis       = "K35.8" // Acute appendicitis, other and unspecified
	ICD10HipFracture        = "S72.0" // Fracture of neck of femur
	ICD10Concussion         = "S06.0" // Concussion
	ICD10Pneumonia          = "J18.9" // Pneumonia, unspecified
	ICD10UTI                = "N39.0" // Urinary tract infection, site not specified
	ICD10Syncope            = "R55"   // Syncope and collapse
	ICD10AtrialFibrillation = "I48.9" // Atrial fibrillation and atrial flutter, unspecified
	ICD10HeartFailure       = "I50.0" // Congestive heart failure
	ICD10Cellulitis         = "L03.1" // Cellulitis of other parts of limb
	ICD10Cataract           = "H25.9" // Senile cataract, unspecified
	ICD10KneeArthrosis      = "M17.1" // Other primary gonarthrosis
	ICD10HipArthrosis       = "M16.1" // Other primary coxarthrosis
	ICD10Gallstones         = "K80.2" // Calculus of gallbladder without cholecystitis
	ICD10Diverticular       = "K57.3" // Diverticular disease of large intestine without perforation or abscess
	ICD10Prostate           = "N40"   // Hyperplasia of prostate
	ICD10BreastCancer       = "C50.9" // Malignant neoplasm of breast, unspecified
	ICD10Delivery           = "O80"   // Single spontaneous delivery
	ICD10Caesarean          = "O82"   // Single delivery by caesarean section
)

// OPCS-4 procedures listed in apc_episode.procedures.
const (
	OPCSAppendicectomy    = "H01.2" // Emergency excision of abnormal appendix NEC
	OPCSLaparoscopic      = "Y75.2" // Laparoscopic approach to abdominal cavity NEC
	OPCSHemiarthroplasty  = "W46.1" // Primary prosthetic replacement of head of femur using cement
	OPCSFemurFixation     = "W19.1" // Primary open reduction of fracture of neck of femur and open fixation using pin and plate
	OPCSCoronaryStent     = "K75.1" // Percutaneous transluminal balloon angioplasty and insertion of 1-2 drug-eluting stents into coronary artery
	OPCSCoronaryBypass    = "K40.1" // Saphenous vein graft replacement of one coronary artery
	OPCSNormalDelivery    = "R24.9" // Normal delivery, unspecified
	OPCSElectiveCaesarean = "R17.9" // Elective caesarean delivery, unspecified
	OPCSOtherCaesarean    = "R18.9" // Other caesarean delivery, unspecified
	OPCSPhacoemulsify     = "C71.2" // Phakoemulsification of lens
	OPCSLensProsthesis    = "C75.1" // Insertion of prosthetic replacement for lens NEC
	OPCSKneeReplacement   = "W40.1" // Primary total prosthetic replacement of knee joint using cement
	OPCSHipReplacement    = "W37.1" // Primary total prosthetic replacement of hip joint using cement
	OPCSCholecystectomy   = "J18.3" // Total cholecystectomy NEC
	OPCSColonoscopy       = "H22.9" // Unspecified diagnostic endoscopic examination of colon
	OPCSProstateResection = "M65.3" // Endoscopic resection of prostate NEC
	OPCSMastectomy        = "B27.4" // Total mastectomy NEC
	OPCSNonInvasiveVent   = "E85.2" // Non-invasive ventilation NEC
)

// Codes returns every code the synthetic network records, with its term,
// grouped by system in a stable order. The slice is new on every call.
func Codes() []Code {
	s := func(code, term string) Code { return Code{SystemSNOMED, code, term} }
	d := func(code, term string) Code { return Code{SystemDMD, code, term} }
	i := func(code, term string) Code { return Code{SystemICD10, code, term} }
	o := func(code, term string) Code { return Code{SystemOPCS4, code, term} }
	return []Code{
		s(SNOMEDType2Diabetes, "Type 2 diabetes mellitus"),
		s(SNOMEDHypertension, "Hypertensive disorder"),
		s(SNOMEDAsthma, "Asthma"),
		s(SNOMEDCOPD, "Chronic obstructive lung disease"),
		s(SNOMEDCHD, "Coronary arteriosclerosis"),
		s(SNOMEDSystolicBP, "Systolic blood pressure"),
		s(SNOMEDHbA1c, "Haemoglobin A1c level - International Federation of Clinical Chemistry and Laboratory Medicine standardised"),
		s(SNOMEDBMI, "Body mass index"),
		s(SNOMEDSmoker, "Smoker"),
		s(SNOMEDExSmoker, "Ex-smoker"),
		s(SNOMEDNeverSmoked, "Never smoked tobacco"),
		s(SNOMEDChestPain, "Chest pain"),
		s(SNOMEDAbdominalPain, "Abdominal pain"),
		s(SNOMEDHeadache, "Headache"),
		s(SNOMEDAnkleSprain, "Sprain of ankle"),
		s(SNOMEDHeadInjury, "Injury of head"),
		s(SNOMEDLaceration, "Laceration - injury"),
		s(SNOMEDFracture, "Fracture of bone"),
		s(SNOMEDCOPDExacerbate, "Acute exacerbation of chronic obstructive airways disease"),
		s(SNOMEDAsthmaAttack, "Asthma attack"),
		s(SNOMEDHypoglycaemia, "Hypoglycaemia"),
		s(SNOMEDHyperglycaemia, "Hyperglycaemia"),
		s(SNOMEDMyocardialInf, "Myocardial infarction"),
		s(SNOMEDPneumonia, "Pneumonia"),
		s(SNOMEDUTI, "Urinary tract infectious disease"),
		s(SNOMEDSyncope, "Syncope"),
		s(SNOMEDFever, "Fever"),
		s(SNOMEDDizziness, "Dizziness"),
		s(SNOMEDCellulitis, "Cellulitis"),
		s(SNOMEDHipFracture, "Fracture of neck of femur"),
		s(SNOMEDFall, "Fall"),
		s(SNOMEDDyspnoea, "Dyspnoea"),

		d(DMDMetformin500, "Metformin 500mg tablets"),
		d(DMDAtorvastatin20, "Atorvastatin 20mg tablets"),
		d(DMDSimvastatin40, "Simvastatin 40mg tablets"),
		d(DMDRamipril5, "Ramipril 5mg capsules"),
		d(DMDLisinopril10, "Lisinopril 10mg tablets"),
		d(DMDAmlodipine5, "Amlodipine 5mg tablets"),
		d(DMDSalbutamol100, "Salbutamol 100micrograms/dose inhaler CFC free"),
		d(DMDBeclometasone100, "Beclometasone 100micrograms/dose inhaler CFC free"),
		d(DMDTiotropium, "Tiotropium 2.5micrograms/dose solution for inhalation cartridge with device"),

		i(ICD10T2DMNoComplication, "Type 2 diabetes mellitus without complications"),
		i(ICD10T2DMPeripheral, "Type 2 diabetes mellitus with peripheral circulatory complications"),
		i(ICD10T2DMOther, "Type 2 diabetes mellitus with other specified complications"),
		i(ICD10T2DMMultiple, "Type 2 diabetes mellitus with multiple complications"),
		i(ICD10COPDInfection, "Chronic obstructive pulmonary disease with acute lower respiratory infection"),
		i(ICD10COPDExacerbation, "Chronic obstructive pulmonary disease with acute exacerbation, unspecified"),
		i(ICD10AcuteMI, "Acute myocardial infarction, unspecified"),
		i(ICD10NSTEMI, "Acute subendocardial myocardial infarction"),
		i(ICD10UnstableAngina, "Unstable angina"),
		i(ICD10Atherosclerotic, "Atherosclerotic heart disease"),
		i(ICD10Hypertension, "Essential (primary) hypertension"),
		i(ICD10Asthma, "Asthma, unspecified"),
		i(ICD10ChestPain, "Chest pain, unspecified"),
		i(ICD10AbdominalPain, "Other and unspecified abdominal pain"),
		i(ICD10Appendicitis, "Acute appendicitis, other and unspecified"),
		i(ICD10HipFracture, "Fracture of neck of femur"),
		i(ICD10Concussion, "Concussion"),
		i(ICD10Pneumonia, "Pneumonia, unspecified"),
		i(ICD10UTI, "Urinary tract infection, site not specified"),
		i(ICD10Syncope, "Syncope and collapse"),
		i(ICD10AtrialFibrillation, "Atrial fibrillation and atrial flutter, unspecified"),
		i(ICD10HeartFailure, "Congestive heart failure"),
		i(ICD10Cellulitis, "Cellulitis of other parts of limb"),
		i(ICD10Cataract, "Senile cataract, unspecified"),
		i(ICD10KneeArthrosis, "Other primary gonarthrosis"),
		i(ICD10HipArthrosis, "Other primary coxarthrosis"),
		i(ICD10Gallstones, "Calculus of gallbladder without cholecystitis"),
		i(ICD10Diverticular, "Diverticular disease of large intestine without perforation or abscess"),
		i(ICD10Prostate, "Hyperplasia of prostate"),
		i(ICD10BreastCancer, "Malignant neoplasm: breast, unspecified"),
		i(ICD10Delivery, "Single spontaneous delivery"),
		i(ICD10Caesarean, "Single delivery by caesarean section"),

		o(OPCSAppendicectomy, "Emergency excision of abnormal appendix NEC"),
		o(OPCSLaparoscopic, "Laparoscopic approach to abdominal cavity NEC"),
		o(OPCSHemiarthroplasty, "Primary prosthetic replacement of head of femur using cement"),
		o(OPCSFemurFixation, "Primary open reduction of fracture of neck of femur and open fixation using pin and plate"),
		o(OPCSCoronaryStent, "Percutaneous transluminal balloon angioplasty and insertion of 1-2 drug-eluting stents into coronary artery"),
		o(OPCSCoronaryBypass, "Saphenous vein graft replacement of one coronary artery"),
		o(OPCSNormalDelivery, "Normal delivery, unspecified"),
		o(OPCSElectiveCaesarean, "Elective caesarean delivery, unspecified"),
		o(OPCSOtherCaesarean, "Other caesarean delivery, unspecified"),
		o(OPCSPhacoemulsify, "Phakoemulsification of lens"),
		o(OPCSLensProsthesis, "Insertion of prosthetic replacement for lens NEC"),
		o(OPCSKneeReplacement, "Primary total prosthetic replacement of knee joint using cement"),
		o(OPCSHipReplacement, "Primary total prosthetic replacement of hip joint using cement"),
		o(OPCSCholecystectomy, "Total cholecystectomy NEC"),
		o(OPCSColonoscopy, "Unspecified diagnostic endoscopic examination of colon"),
		o(OPCSProstateResection, "Endoscopic resection of prostate NEC"),
		o(OPCSMastectomy, "Total mastectomy NEC"),
		o(OPCSNonInvasiveVent, "Non-invasive ventilation NEC"),
	}
}
